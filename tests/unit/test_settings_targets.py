from __future__ import annotations

import pytest

from mana_llm import errors
from mana_llm.domain import Target
from mana_llm.routing.targets import parse_target
from mana_llm.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.port == 3025
    ollama = settings.provider("ollama")
    assert (
        ollama is not None
        and ollama.base_url == "http://localhost:11434"
        and ollama.timeout_s == 120
    )
    groq = settings.provider("groq")
    assert (
        groq is not None
        and not groq.configured
        and groq.base_url == "https://api.groq.com/openai/v1"
    )
    assert settings.max_request_bytes == 20 * 1024 * 1024


def test_cache_settings() -> None:
    default = Settings.from_env({})
    assert default.cache_enabled and default.redis_url is None
    assert (default.cache_ttl_s, default.cache_timeout_s) == (3600.0, 0.05)
    settings = Settings.from_env(
        {"CACHE_ENABLED": "off", "REDIS_URL": "redis://:hunter2@cache:6379/1", "CACHE_TTL": "60"}
    )
    assert not settings.cache_enabled and settings.cache_ttl_s == 60.0
    assert settings.redis_url == "redis://:hunter2@cache:6379/1"
    assert "hunter2" not in repr(settings)
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"REDIS_URL": "cache:6379?password=hunter2"})
    assert "hunter2" not in str(bad.value)


def test_keys_are_configuration_not_repr() -> None:
    settings = Settings.from_env(
        {"GROQ_API_KEY": "sk-abc", "MANA_LLM_API_KEYS": "a, b,,", "GROQ_BASE_URL": "http://x/v1/"}
    )
    groq = settings.provider("groq")
    assert groq is not None and groq.configured and groq.base_url == "http://x/v1"
    assert settings.api_keys == ("a", "b")
    assert "sk-abc" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "x"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"OLLAMA_TIMEOUT": "0"}, "OLLAMA_TIMEOUT"),
        ({"OLLAMA_TIMEOUT": "nan"}, "OLLAMA_TIMEOUT"),
        ({"OLLAMA_URL": "ftp://x"}, "OLLAMA_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MAX_REQUEST_BYTES": "12"}, "MAX_REQUEST_BYTES"),
        ({"CACHE_ENABLED": "maybe"}, "CACHE_ENABLED"),
        ({"CACHE_TTL": "-1"}, "CACHE_TTL"),
        ({"CACHE_TIMEOUT": "0"}, "CACHE_TIMEOUT"),
        ({"CACHE_MAX_ENTRIES": "0"}, "CACHE_MAX_ENTRIES"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ],
)
def test_malformed_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


PROVIDERS = ("ollama", "groq", "openrouter", "together")


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("gemma3:4b", Target("ollama", "gemma3:4b")),
        ("ollama/gemma3:4b", Target("ollama", "gemma3:4b")),
        ("ollama", Target("ollama", "default:1b")),
        ("hf.co/org/model:q4", Target("ollama", "hf.co/org/model:q4")),
        ("groq/llama-3.1-8b-instant", Target("groq", "llama-3.1-8b-instant")),
        (
            "openrouter/meta-llama/llama-3.1-8b-instruct",
            Target("openrouter", "meta-llama/llama-3.1-8b-instruct"),
        ),
    ],
)
def test_parse_target(model: str, target: Target) -> None:
    assert parse_target(model, PROVIDERS, "default:1b") == target
    assert target.resolved == f"{target.provider}/{target.model}"


def test_provider_without_model_is_a_400() -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        parse_target("groq/", PROVIDERS, "x")
    assert raised.value.param == "model"


@pytest.mark.parametrize("off", ["off", "false", "0", "0.0", "no", ""])
def test_stream_keepalive_off_in_every_spelling(off: str) -> None:
    assert Settings.from_env({"STREAM_KEEPALIVE": off}).stream_keepalive_s == 0.0


def test_drain_delay() -> None:
    assert Settings.from_env({}).drain_delay_s == 0.0
    assert Settings.from_env({"DRAIN_DELAY": "5"}).drain_delay_s == 5.0
    with pytest.raises(SettingsError, match="DRAIN_DELAY"):
        Settings.from_env({"DRAIN_DELAY": "soon"})


@pytest.mark.parametrize("suffix", ["/v1", "/api"])
def test_an_ollama_url_ending_in_v1_or_api_is_a_warning_saying_what_to_set(suffix: str) -> None:
    settings = Settings.from_env({"OLLAMA_URL": "http://gpu:11434" + suffix, "HOST": "127.0.0.1"})
    assert settings.warnings() == [
        f"OLLAMA_URL=http://gpu:11434{suffix} ends in {suffix}: the gateway speaks Ollama's"
        " native API under it itself; set OLLAMA_URL=http://gpu:11434"
    ]


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("0.0.0.0", "", True),
        ("192.0.2.7", "", True),
        ("0.0.0.0", "gw-key", False),
        ("127.0.0.1", "", False),
        ("127.0.0.2", "", False),
        ("::1", "", False),
        ("localhost", "", False),
    ],
)
def test_listening_beyond_loopback_without_keys_is_a_warning(
    host: str, keys: str, warned: bool
) -> None:
    warnings = Settings.from_env({"HOST": host, "MANA_LLM_API_KEYS": keys}).warnings()
    assert warnings == (
        [
            f"listening on {host} without MANA_LLM_API_KEYS: anyone who can reach this port"
            " can spend the configured cloud keys"
        ]
        if warned
        else []
    )


def test_each_provider_knows_where_its_url_was_set() -> None:
    settings = Settings.from_env({})
    assert [(p.name, p.url_env) for p in settings.providers] == [
        ("ollama", "OLLAMA_URL"),
        ("openrouter", "OPENROUTER_BASE_URL"),
        ("groq", "GROQ_BASE_URL"),
        ("together", "TOGETHER_BASE_URL"),
    ]
