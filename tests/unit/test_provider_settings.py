"""Deployments from the environment (comma lists) and the providers file, and the one-line
errors for what cannot be right."""

from __future__ import annotations

import pytest

from mana_llm.settings import Settings, SettingsError


def settings(providers_file: str | None = None, **env: str) -> Settings:
    if providers_file is not None:
        env["PROVIDERS_PATH"] = "providers.yaml"
    return Settings.from_env(env, read_text=lambda path: providers_file or "")


def places(s: Settings, name: str) -> list[tuple[str, str, str | None]]:
    provider = s.provider(name)
    assert provider is not None
    return [(d.name, d.base_url, d.api_key) for d in provider.places()]


def test_one_url_and_one_key_is_one_deployment_as_before() -> None:
    s = settings(OLLAMA_URL="http://box:11434", GROQ_API_KEY="k1")
    assert places(s, "ollama") == [("ollama-1", "http://box:11434", None)]
    assert places(s, "groq") == [("groq-1", "https://api.groq.com/openai/v1", "k1")]
    groq = s.provider("groq")
    assert groq is not None and groq.configured and groq.api_key == "k1"


def test_comma_lists_are_deployments() -> None:
    s = settings(OLLAMA_URL="http://a:11434, http://b:11434/", GROQ_API_KEY="k1,k2")
    assert places(s, "ollama") == [
        ("ollama-1", "http://a:11434", None),
        ("ollama-2", "http://b:11434", None),
    ]
    assert [(name, key) for name, _, key in places(s, "groq")] == [
        ("groq-1", "k1"),
        ("groq-2", "k2"),
    ]
    together = s.provider("together")
    assert together is not None and not together.configured  # no key at all: still off


def test_a_file_providers_key_variable_takes_a_list_too() -> None:
    file = "providers:\n  vllm:\n    base_url: http://gpu:8000/v1\n    api_key_env: VLLM_KEYS\n"
    s = settings(file, VLLM_KEYS="v1, v2")
    assert places(s, "vllm") == [
        ("vllm-1", "http://gpu:8000/v1", "v1"),
        ("vllm-2", "http://gpu:8000/v1", "v2"),
    ]
    vllm = s.provider("vllm")
    assert vllm is not None and vllm.configured and vllm.api_key == "v1"


def test_a_bad_url_in_the_list_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="OLLAMA_URL='box:11434' must be an http"):
        settings(OLLAMA_URL="http://a:11434,box:11434")


FILE = """
providers:
  ollama:
    cold_load_s: 20
    deployments:
      - {name: gpu-a, base_url: "http://gpu-a:11434", max_in_flight: 4}
      - {name: gpu-b, base_url: "http://gpu-b:11434", max_in_flight: 2, weight: 0.5}
  groq:
    deployments:
      - {name: groq-team, api_key_env: GROQ_TEAM_KEY}
      - {api_key_env: GROQ_BATCH_KEY, weight: 3}
"""


def test_the_providers_file_lists_deployments() -> None:
    s = settings(FILE, GROQ_TEAM_KEY="t", GROQ_BATCH_KEY="b", GROQ_API_KEY="unused")
    ollama, groq = s.provider("ollama"), s.provider("groq")
    assert ollama is not None and groq is not None
    assert ollama.cold_load_s == 20.0
    assert [(d.name, d.base_url, d.max_in_flight, d.weight) for d in ollama.places()] == [
        ("gpu-a", "http://gpu-a:11434", 4, 1.0),
        ("gpu-b", "http://gpu-b:11434", 2, 0.5),
    ]
    assert ollama.base_url == "http://gpu-a:11434"  # the first, for messages naming one place
    assert [(d.name, d.api_key, d.weight) for d in groq.places()] == [
        ("groq-team", "t", 1.0),
        ("groq-2", "b", 3.0),
    ]
    assert all(d.base_url == "https://api.groq.com/openai/v1" for d in groq.places())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers:\n  ollama:\n    deployments: []\n", "must be a list of one or more"),
        (
            "providers:\n  ollama:\n    deployments: [{base_url: 'http://a:1', gpu: 1}]\n",
            "deployment 1 of 'ollama' takes api_key_env, base_url, max_in_flight, name, weight",
        ),
        (
            "providers:\n  ollama:\n    deployments: [{name: a, base_url: 'http://a:1'},"
            " {name: a, base_url: 'http://b:1'}]\n",
            "deployment names must be unique: a is used twice",
        ),
        (
            "providers:\n  ollama:\n    deployments: [{base_url: 'http://a:1', weight: 0}]\n",
            "the weight of deployment 1 of 'ollama' must be a positive number",
        ),
        (
            "providers:\n  ollama:\n    deployments: [{base_url: 'http://a:1', max_in_flight: 0}]\n",
            "max_in_flight of deployment 1 of 'ollama' must be a whole number from 1",
        ),
        (
            "providers:\n  groq:\n    deployments: [{api_key_env: NOT_SET}]\n",
            "the api_key_env of deployment 1 of 'groq' names no variable that is set",
        ),
        ("providers:\n  ollama:\n    cold_load_s: -1\n", "the cold_load_s of 'ollama'"),
        ("providers: [not, a, mapping]\n", "'providers' and 'ollama' must map names"),
    ],
)
def test_what_cannot_be_right_is_one_line(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(text)
    assert message in str(raised.value) and "\n" not in str(raised.value)
