from __future__ import annotations

import pytest

from mana_llm import codec


def test_round_trip_is_compact_utf8() -> None:
    assert (
        codec.dumps({"a": "é", "b": [1, 2.5, None, True]})
        == '{"a":"é","b":[1,2.5,null,true]}'.encode()
    )
    assert codec.loads(b'{"a": "\\u00e9"}') == {"a": "é"}


def test_integers_beyond_64_bits_survive_both_ways() -> None:
    big = 2**70
    assert codec.loads(f'{{"seed": {big}}}') == {"seed": big}
    assert codec.loads(codec.dumps({"seed": big})) == {"seed": big}


@pytest.mark.parametrize("bad", [b"{", b"", b"\xff", b"[1,]"])
def test_invalid_json_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is ValueError, whatever its text
        codec.loads(bad)
