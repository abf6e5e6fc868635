"""KEYS_PATH: the callers, each with its key (as a SHA-256, or in an environment variable), the
models it may ask for and its limits. Parsed strictly (an unknown field, a duplicate key, a
malformed value: one `KeysFileError` naming it, never the key); `KeyStore` keeps the table in
use and swaps it whole on reload, keeping the last good one when the file is bad.

No key, hash or prefix of either ever leaves this module: a caller is its name."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import yaml

PERIODS = ("day", "week", "month")
MAX_FILE_BYTES = 1024 * 1024  # a keys file is a table of callers, not a data set
MAX_MODEL_PATTERNS = 256
MAX_ALLOWED = 4096  # models a caller's allow-list answers are kept for
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HEX64 = re.compile(r"[0-9a-f]{64}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
FIELDS = frozenset(
    {"key_sha256", "key_env", "models", "rpm", "tpm", "max_parallel", "budget", "operator"}
)
BUDGET_FIELDS = frozenset({"tokens", "usd", "period"})


class KeysFileError(Exception):
    """The keys file cannot be used: one line, never a key."""


@attrs.frozen
class Budget:
    tokens: int | None
    usd: float | None
    period: str  # day | week | month (UTC)


@attrs.frozen
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget: Budget | None = None
    any: bool = attrs.field(init=False)  # any limit at all (known once, read per request)
    smallest: float = attrs.field(init=False)  # the fewest tokens a limit allows in all

    def __attrs_post_init__(self) -> None:
        limits = (self.rpm, self.tpm, self.max_parallel, self.budget)
        object.__setattr__(self, "any", any(v is not None for v in limits))
        caps = [self.tpm, self.budget.tokens if self.budget else None]
        object.__setattr__(self, "smallest", min((c for c in caps if c), default=float("inf")))


@attrs.frozen
class Caller:
    """One caller of the keys file, as every other part sees it: its name, never its key."""

    name: str
    models: tuple[str, ...] = ()  # globs on what the caller sends; () : any model
    limits: Limits = Limits()
    operator: bool = False  # may read /v1/keys/status
    namespace: str = attrs.field(init=False, eq=False)  # its own cache namespace
    # what `allows` answered, by model sent (bounded: the models are what clients send)
    _allowed: dict[str, bool] = attrs.field(init=False, eq=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:24]
        object.__setattr__(self, "namespace", "caller-" + digest)

    def allows(self, model: str) -> bool:
        if not self.models:
            return True
        known = self._allowed.get(model)
        if known is None:
            known = any(fnmatch.fnmatchcase(model, p) for p in self.models)
            if len(self._allowed) < MAX_ALLOWED:
                self._allowed[model] = known
        return known


@attrs.frozen
class KeyTable:
    callers: Mapping[str, Caller]  # by name
    by_digest: Mapping[bytes, Caller]  # the SHA-256 of each key
    _digests: Mapping[str, bytes] = attrs.field(init=False, factory=dict)  # name -> digest
    # the keys already found, as sent: a caller's next request is one dict lookup, not a hash
    # (only keys of the table, so bounded by it; gone with the table on reload)
    _found: dict[str, Caller] = attrs.field(init=False, eq=False, factory=dict)

    def find(self, token: str) -> Caller | None:
        """The caller whose key `token` is. A new key is looked up by its SHA-256 (a timing
        difference can tell at most where a digest differs, which says nothing of the key),
        the match then confirmed in constant time. A key found before is looked up as it is:
        its string is compared only to one whose hash (keyed by a secret of this process) is
        the same, so timing tells nothing of a key the client does not already have."""
        known = self._found.get(token)
        if known is not None:
            return known
        digest = hashlib.sha256(_raw(token)).digest()
        found = self.by_digest.get(digest)
        if found is None or not hmac.compare_digest(self.digest_of[found.name], digest):
            return None
        self._found[token] = found
        return found

    @property
    def digest_of(self) -> Mapping[str, bytes]:
        return self._digests

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_digests", {c.name: d for d, c in self.by_digest.items()})


EMPTY = KeyTable({}, {})


def _raw(token: str) -> bytes:
    """The bytes the client sent (a header is read as latin-1)."""
    try:
        return token.encode("latin-1")
    except UnicodeEncodeError:
        return token.encode("utf-8", "surrogateescape")


def parse_keys(text: str, env: Mapping[str, str]) -> KeyTable:
    """The table a keys file describes; KeysFileError naming what is wrong."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_FILE_BYTES:
        raise KeysFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeysFileError(f"not valid YAML ({_short(str(exc).splitlines()[0])})") from None
    if not isinstance(data, dict) or set(data) != {"keys"} or not isinstance(data["keys"], dict):
        raise KeysFileError("the top level must be 'keys:' mapping caller names to settings")
    callers: dict[str, Caller] = {}
    digests: dict[bytes, Caller] = {}
    for name, spec in data["keys"].items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise KeysFileError(
                f"caller name {_short(repr(name))}: 1 to 64 characters of A-Z a-z 0-9 . _ -"
            )
        caller, digest = _caller(name, spec, env)
        if digest in digests:
            raise KeysFileError(f"callers {digests[digest].name!r} and {name!r} have the same key")
        callers[name], digests[digest] = caller, caller
    return KeyTable(callers, digests)


def _caller(name: str, spec: Any, env: Mapping[str, str]) -> tuple[Caller, bytes]:
    if not isinstance(spec, dict):
        raise KeysFileError(f"caller {name!r}: its settings must be a mapping")
    unknown = sorted(str(k) for k in spec if k not in FIELDS)
    if unknown:
        raise KeysFileError(
            f"caller {name!r}: unknown field {_short(unknown[0])!r}"
            f" (fields: {', '.join(sorted(FIELDS))})"
        )
    digest = _digest(name, spec, env)
    models = spec.get("models") or []
    if (
        not isinstance(models, list)
        or len(models) > MAX_MODEL_PATTERNS
        or not all(isinstance(m, str) and 0 < len(m) <= 256 for m in models)
    ):
        raise KeysFileError(
            f"caller {name!r}: models must be a list of at most {MAX_MODEL_PATTERNS} patterns"
            " of 1 to 256 characters"
        )
    limits = Limits(
        rpm=_count(name, "rpm", spec.get("rpm")),
        tpm=_count(name, "tpm", spec.get("tpm")),
        max_parallel=_count(name, "max_parallel", spec.get("max_parallel")),
        budget=_budget(name, spec.get("budget")),
    )
    operator = spec.get("operator", False)
    if not isinstance(operator, bool):
        raise KeysFileError(f"caller {name!r}: operator must be true or false")
    return Caller(name, tuple(models), limits, operator), digest


def _digest(name: str, spec: dict[Any, Any], env: Mapping[str, str]) -> bytes:
    given, variable = spec.get("key_sha256"), spec.get("key_env")
    if (given is None) == (variable is None):
        raise KeysFileError(f"caller {name!r}: set exactly one of key_sha256 and key_env")
    if given is not None:
        if not isinstance(given, str) or not HEX64.fullmatch(given.strip().lower()):
            raise KeysFileError(f"caller {name!r}: key_sha256 must be 64 hexadecimal digits")
        return bytes.fromhex(given.strip())
    if not isinstance(variable, str) or not ENV_NAME.fullmatch(variable):
        raise KeysFileError(f"caller {name!r}: key_env must name an environment variable")
    key = env.get(variable, "").strip()
    if not key:
        raise KeysFileError(f"caller {name!r}: the variable {variable} is not set or empty")
    if len(key) < 8 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
        raise KeysFileError(
            f"caller {name!r}: the key in {variable} must be at least 8 printable characters"
        )
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _count(name: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**12:
        raise KeysFileError(f"caller {name!r}: {field} must be a positive whole number")
    return value


def _budget(name: str, value: Any) -> Budget | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - BUDGET_FIELDS:
        raise KeysFileError(f"caller {name!r}: budget takes tokens, usd and period")
    period = value.get("period", "month")
    if period not in PERIODS:
        raise KeysFileError(f"caller {name!r}: budget period must be day, week or month")
    usd = value.get("usd")
    if usd is not None and (
        isinstance(usd, bool) or not isinstance(usd, int | float) or not 0 < usd < 1e12
    ):
        raise KeysFileError(f"caller {name!r}: budget usd must be a positive number")
    tokens = _count(name, "budget tokens", value.get("tokens"))
    if tokens is None and usd is None:
        raise KeysFileError(f"caller {name!r}: a budget needs tokens, usd or both")
    return Budget(tokens, None if usd is None else float(usd), period)


def _short(text: str, limit: int = 80) -> str:
    """A piece of the file in a message: bounded, one line, printable."""
    flat = "".join(c if c.isprintable() else "?" for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@attrs.define(eq=False)
class KeyStore:
    """The table in use: loaded at start (a bad file stops start-up), reloaded on SIGHUP and
    the file watch (a bad file keeps the last good table, and says so in `status`)."""

    path: str
    env: Mapping[str, str]
    wall: Callable[[], float]
    read_text: Callable[[str], str]
    table: KeyTable = EMPTY
    loaded_at: float | None = None
    last_error: str | None = None
    on_reload: Callable[[KeyTable], None] | None = None

    def load(self) -> KeyTable:
        """Read the file; KeysFileError (or OSError) when it cannot be used."""
        try:
            text = self.read_text(self.path)
        except UnicodeDecodeError:
            raise KeysFileError("not UTF-8 text") from None
        table = parse_keys(text, self.env)
        self.table, self.loaded_at, self.last_error = table, self.wall(), None
        if self.on_reload is not None:
            self.on_reload(table)
        return table

    def reload(self) -> bool:
        """Whether the file was read; else the last good table stays, and why is kept."""
        try:
            self.load()
        except (OSError, KeysFileError) as exc:
            self.last_error = (
                f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
            )
            return False
        return True

    def status(self) -> dict[str, Any]:
        """What operators see: the callers and their limits, never a key."""
        return {
            "path": self.path,
            "loaded_at": self.loaded_at,
            "last_error": self.last_error,
            "callers": [
                {
                    "name": c.name,
                    "models": list(c.models),
                    "limits": _limits_json(c.limits),
                    "operator": c.operator,
                }
                for c in self.table.callers.values()
            ],
        }


def _limits_json(limits: Limits) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: v
        for k, v in (
            ("rpm", limits.rpm),
            ("tpm", limits.tpm),
            ("max_parallel", limits.max_parallel),
        )
        if v is not None
    }
    if limits.budget is not None:
        out["budget"] = attrs.asdict(limits.budget)
    return out
