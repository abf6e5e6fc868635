from __future__ import annotations

import pathlib

import pytest
import trio
import trio.testing

from mana_llm.domain import Target
from mana_llm.routing.aliases import (
    AliasFileError,
    AliasStore,
    AliasTable,
    parse_alias_table,
    run_alias_watch,
)

PROVIDERS = ("ollama", "groq", "openrouter", "together")


def parse(text: str) -> AliasTable:
    return parse_alias_table(text, PROVIDERS, source="a.yaml", loaded_at=5.0)


def test_the_seed_file_loads() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    table = parse_alias_table(
        (root / "aliases.yaml").read_text(), PROVIDERS, source="x", loaded_at=1
    )
    assert set(table.aliases) == {
        f"mana/{c}" for c in ("fast-text", "long-form", "structured", "reasoning", "vision")
    }
    assert all(alias.chain and alias.description for alias in table.aliases.values())
    assert table.aliases["mana/reasoning"].first_token_timeout_s == 120


def test_a_chain_keeps_slashes_in_models_and_order() -> None:
    table = parse_alias_table(
        "aliases:\n  mana/x:\n    chain: [openrouter/meta-llama/llama-3.1-8b-instruct, ollama/gemma3:4b]\n",
        PROVIDERS,
        source="a.yaml",
        loaded_at=5.0,
    )
    alias = table.get("mana/x")
    assert alias is not None
    assert alias.chain == (
        Target("openrouter", "meta-llama/llama-3.1-8b-instruct"),
        Target("ollama", "gemma3:4b"),
    )
    assert alias.description == "" and table.loaded_at == 5.0 and table.content_hash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a.yaml: the file is empty"),
        ("aliases: [1\n", "a.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'$"),
        ("[]\n", "a.yaml:1: the file must be a mapping"),
        ("other: 1\n", "a.yaml:1: unknown key 'other'"),
        (
            "aliases:\n  fast:\n    chain: [ollama/x]\n",
            "a.yaml:2: alias 'fast' must be named mana/<class>",
        ),
        ("aliases:\n  mana/:\n    chain: [ollama/x]\n", "a.yaml:2: alias 'mana/' must be named"),
        (
            "aliases:\n  mana/a:\n    chain: []\n",
            "a.yaml:3: the chain of 'mana/a' must be a non-empty list",
        ),
        ("aliases:\n  mana/a:\n    description: x\n", "a.yaml:3: alias 'mana/a' has no chain"),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    retry: 3\n",
            "a.yaml:4: alias 'mana/a' has unknown key 'retry'",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    retries: -1\n",
            "a.yaml:4: retries must be a whole number from 0 to 10",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    retries: 2.5\n",
            "a.yaml:4: retries must be a whole number from 0 to 10",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    buffer: maybe\n",
            "a.yaml:4: buffer must be true or false",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    hedge_after_s: 0\n",
            "a.yaml:4: hedge_after_s must be a positive",
        ),
        (
            "aliases:\n  mana/a:\n    chain:\n      - ollama/x\n      - nowhere/y\n",
            "a.yaml:5: unknown provider 'nowhere'",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [gemma3]\n",
            "a.yaml:3: chain entry 'gemma3' must be provider/model",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    first_token_timeout_s: -1\n",
            "a.yaml:4: first_token_timeout_s must be a positive",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    attempt_timeout_s: soon\n",
            "a.yaml:4: 'soon' is not a number",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n  mana/a:\n    chain: [ollama/y]\n",
            "a.yaml:4: 'mana/a' appears twice",
        ),
        (
            "aliases:\n  mana/a:\n    chain: [ollama/x]\n    cache: sometimes\n",
            "a.yaml:4: cache must be true or false",
        ),
    ],
)
def test_validation_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(AliasFileError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        parse(text)


def test_an_alias_may_opt_in_or_out_of_the_cache() -> None:
    text = (
        "aliases:\n"
        "  mana/a:\n    chain: [ollama/x]\n    cache: true\n"
        "  mana/b:\n    chain: [ollama/x]\n    cache: off\n"
        "  mana/c:\n    chain: [ollama/x]\n"
    )
    table = parse(text)
    assert [table.aliases[n].cache for n in ("mana/a", "mana/b", "mana/c")] == [True, False, None]
    assert table.aliases["mana/a"].to_json()["cache"] is True
    assert "cache" not in table.aliases["mana/c"].to_json()


def test_the_store_keeps_the_last_good_table_and_counts() -> None:
    texts = {"now": "aliases:\n  mana/a:\n    chain: [ollama/x]\n"}
    results: list[str] = []
    store = AliasStore("p", PROVIDERS, lambda: 1.0, lambda path: texts["now"], results.append)
    assert store.reload()
    good = store.table
    texts["now"] = "aliases: {mana/a: {chain: [nowhere/x]}}\n"
    assert not store.reload()
    assert store.table is good
    assert store.last_error is not None and "nowhere" in store.last_error
    assert results == ["success", "error"]


async def test_the_file_watch_reloads_on_a_change_and_reports_a_bad_file_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    files = {"a.yaml": "aliases:\n  mana/a:\n    chain: [ollama/x]\n"}
    results: list[str] = []

    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    store = AliasStore("a.yaml", ["ollama"], lambda: 0.0, read)
    store.on_reload = results.append
    store.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_alias_watch, store, 5.0)
        await trio.sleep(12)  # two looks, no change: no reload
        assert results == []
        files["a.yaml"] = "aliases:\n  mana/b:\n    chain: [ollama/y]\n"
        await trio.sleep(5)  # the look at 15 s sees it
        assert list(store.table.aliases) == ["mana/b"] and results == ["success"]
        files["a.yaml"] = "aliases:\n  mana/c:\n    chain: [nowhere/y]\n"
        await trio.sleep(20)  # four looks at a bad file: one reload, reported once
        assert list(store.table.aliases) == ["mana/b"] and results == ["success", "error"]
        assert store.last_error is not None and "nowhere" in store.last_error
        del files["a.yaml"]
        await trio.sleep(5)  # gone: reported once too, the table kept
        assert results == ["success", "error", "error"]
        nursery.cancel_scope.cancel()
