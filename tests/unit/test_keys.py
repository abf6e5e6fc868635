"""The keys file parsed strictly, callers found by their keys, the prompt estimate, charges and
OpenAI's duration format."""

from __future__ import annotations

import hashlib

import pytest

from mana_llm.access.gate import Admission, Gate, duration, prompt_estimate
from mana_llm.access.keys import Caller, KeysFileError, KeyStore, parse_keys
from mana_llm.access.prices import Prices, parse_prices, reachable
from mana_llm.domain import ChatRequest, Message, Usage

KEY = "sk-service-0123456789"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


def test_a_caller_is_found_by_its_key_and_only_by_it() -> None:
    table = parse_keys(
        f"keys:\n  a:\n    key_sha256: {DIGEST}\n    models: ['mana/*']\n"
        "  b:\n    key_env: B_KEY\n    budget: {usd: 5}\n",
        {"B_KEY": "sk-b-0123456789"},
    )
    assert table.find(KEY) == table.callers["a"]
    assert table.find("sk-b-0123456789") == table.callers["b"]
    assert table.find(KEY + " ") is None and table.find("") is None
    for _ in range(2):  # found again, from the keys already found; a near key still not
        assert table.find(KEY) == table.callers["a"]
        assert table.find(KEY[:-1]) is None and table.find(KEY.upper()) is None
    assert table.callers["a"].allows("mana/fast-text")
    assert not table.callers["a"].allows("groq/llama")
    budget = table.callers["b"].limits.budget
    assert budget is not None and (budget.usd, budget.tokens, budget.period) == (5.0, None, "month")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("keys: {}\nother: 1\n", "the top level must be 'keys:'"),
        ("keys:\n  a:\n    key_env: MISSING\n", "MISSING is not set"),
        ("keys:\n  a:\n    key_sha256: abc\n", "64 hexadecimal"),
        ("keys:\n  a:\n    key_env: K\n    key_sha256: " + DIGEST + "\n", "exactly one"),
        ("keys:\n  a:\n    key_env: K\n    rpm: 0\n", "rpm must be a positive"),
        ("keys:\n  a:\n    key_env: K\n    rpm: true\n", "rpm must be a positive"),
        ("keys:\n  a:\n    key_env: K\n    budget: {period: year, tokens: 1}\n", "period"),
        ("keys:\n  a:\n    key_env: K\n    budget: {period: day}\n", "needs tokens, usd"),
        ("keys:\n  a:\n    key_env: K\n    models: mana/*\n", "models must be a list"),
        ("keys:\n  a:\n    key_env: SHORT\n", "at least 8 printable"),
        ("keys:\n  a b:\n    key_env: K\n", "caller name 'a b'"),
    ],
)
def test_a_bad_file_names_what_is_wrong_and_never_the_key(text: str, says: str) -> None:
    with pytest.raises(KeysFileError, match=None) as raised:
        parse_keys(text, {"K": KEY, "SHORT": "sk"})
    assert says in str(raised.value)
    assert KEY not in str(raised.value) and DIGEST not in str(raised.value)


def test_a_bad_reload_keeps_the_last_good_table() -> None:
    files = {"k.yaml": f"keys:\n  a:\n    key_sha256: {DIGEST}\n"}
    store = KeyStore("k.yaml", {}, lambda: 100.0, files.__getitem__)
    store.load()
    files["k.yaml"] = "keys: ["
    assert not store.reload()
    assert store.table.find(KEY) is not None
    assert store.last_error is not None and "not valid YAML" in store.last_error
    assert store.status()["callers"][0]["name"] == "a"
    files["k.yaml"] = "keys: {}\n"
    assert store.reload() and store.table.find(KEY) is None and store.last_error is None


def test_the_prompt_estimate_counts_text_messages_and_images() -> None:
    chat = ChatRequest("m", (Message("system", "x" * 40), Message("user", "y" * 400)))
    assert prompt_estimate(chat) == 440 // 4 + 2 * 4


def test_charges_use_the_providers_count_else_the_estimate() -> None:
    prices = Prices(
        {"groq/m": parse_prices({"groq/m": {"input_per_mtok": 1}}, "f").table["groq/m"]}
    )
    gate = Gate(None, None, prices, None, 60.0)
    admission = Admission(Caller("a"), prompt_estimate=9)
    exact = gate.charge(admission, "groq/m", Usage(100, 20), 0, False, True)
    assert (exact.tokens, exact.estimated, exact.cost_usd) == (120, False, 100 / 1e6)
    cut = gate.charge(admission, "groq/m", None, 3, False, False)
    assert (cut.prompt_tokens, cut.completion_tokens, cut.estimated) == (9, 3, True)
    assert gate.charge(admission, "groq/m", Usage(5, 5), 0, True, True).tokens == 0  # a hit
    assert gate.charge(admission, None, None, 0, False, False).tokens == 0  # nothing answered


def test_unpriced_cloud_models_a_usd_budget_can_reach() -> None:
    table = parse_keys(
        f"keys:\n  a:\n    key_sha256: {DIGEST}\n    models: ['mana/*', 'together/x']\n"
        "    budget: {usd: 1}\n",
        {},
    )
    caller = table.callers["a"]
    aliases = {"mana/fast": ["ollama/g", "groq/m"], "other": ["openrouter/z"]}
    assert reachable(caller, aliases) == {"ollama/g", "groq/m", "together/x"}
    prices = parse_prices({"groq/m": {"input_per_mtok": 1, "output_per_mtok": 2}}, "f")
    assert prices.unpriced(caller, reachable(caller, aliases)) == ["together/x"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.017, "17ms"),
        (0.9995, "1s"),
        (1, "1s"),
        (8.64, "8.64s"),
        (60, "1m0s"),
        (61.25, "1m1.25s"),
        (360.5, "6m0.5s"),
    ],
)
def test_durations_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text
