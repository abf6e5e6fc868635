"""The keys file parsed strictly, callers found by their keys, the prompt estimate, charges and
OpenAI's duration format."""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import pytest

from mana_llm.access.gate import Admission, Gate, duration, prompt_estimate
from mana_llm.access.keys import Budget, Caller, KeysFileError, KeyStore, Limits, parse_keys
from mana_llm.access.limits import period_of
from mana_llm.access.prices import Prices, parse_prices, reachable
from mana_llm.access.refusals import QuotaExceeded
from mana_llm.access.sql_limits import SqlLimits
from mana_llm.domain import ChatRequest, Message, Usage

KEY = "sk-service-0123456789"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
T = TypeVar("T")


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


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """A coroutine that never waits (the in-memory store), run to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    raise AssertionError("it waited")


def in_memory(now: list[float]) -> Gate:
    return Gate(
        None, SqlLimits(":memory:", shared=False), Prices(), None, 60.0, wall=lambda: now[0]
    )


@pytest.mark.parametrize("kind", [None, "day", "week", "month"])
def test_an_admission_counts_in_the_period_that_holds_it(kind: str | None) -> None:
    """The period is worked out once and kept until it ends: every request still lands in the
    one holding it, the budget renewed at its end (the first second of the next is new)."""
    budget = Budget(tokens=100, usd=None, period=kind) if kind else None
    caller = Caller("a", limits=Limits(rpm=1000, budget=budget))
    now = [1_780_000_000.0]  # a Tuesday, mid-month (UTC)
    gate = in_memory(now)
    start, end = period_of(caller.limits, now[0])
    for at in (now[0], end - 0.001, end, end + 86400 * 40):
        now[0] = at
        admission = drive(gate.admit(caller, "m", ["groq/m"], 10, 40))
        assert admission.ask is not None and admission.ask.period == period_of(caller.limits, at)
    if kind is not None:  # 60 tokens a request, 100 a period: the second is refused
        now[0] = start + 1
        gate = in_memory(now)
        first = drive(gate.admit(caller, "m", ["groq/m"], 20, 40))
        gate.charge(first, "groq/m", Usage(20, 40), 0, False, True)
        assert gate.settle_later(first)  # spent: it outlives the request's lease
        with pytest.raises(QuotaExceeded):
            drive(gate.admit(caller, "m", ["groq/m"], 20, 40))
        now[0] = end - 0.001
        with pytest.raises(QuotaExceeded):
            drive(gate.admit(caller, "m", ["groq/m"], 20, 40))
        now[0] = end
        assert drive(gate.admit(caller, "m", ["groq/m"], 20, 40)).verdict is not None


def test_the_dearest_reachable_price_is_reserved_and_the_answering_one_charged() -> None:
    prices = parse_prices(
        {
            "groq/m": {"input_per_mtok": 1, "output_per_mtok": 2},
            "ollama/big": {"input_per_mtok": 3},
        },
        "f",
    )
    for _ in range(2):  # the second time from the rates already known
        assert prices.dearest(["ollama/g", "groq/m"], 1000, 500) == (1000 + 2 * 500) / 1e6
        assert prices.dearest(["ollama/big", "groq/m"], 1000, 500) == 3 * 1000 / 1e6
        assert prices.dearest(["together/x"], 1000, 500) == 0.0 and prices.dearest([], 9, 9) == 0
        assert prices.cost("groq/m", 7, 3) == prices.table["groq/m"].cost(7, 3)
        assert prices.cost("ollama/g", 7, 3) == prices.cost(None, 7, 3) == 0.0


def test_an_allow_list_answers_the_same_from_what_it_already_answered() -> None:
    caller = Caller("a", models=("mana/*", "groq/llama-?"))
    for _ in range(2):
        assert caller.allows("mana/fast-text") and caller.allows("groq/llama-3")
        assert not caller.allows("groq/llama-31") and not caller.allows("ollama/x")
    assert Caller("b").allows("anything")
