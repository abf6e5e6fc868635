"""`mana/<class>` aliases: an immutable table loaded from aliases.yaml, swapped whole on reload.

The file is validated on load; every error names the line that caused it. A request takes the
current table once, so a reload never changes a chain mid-walk.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs
import trio
import yaml

from mana_llm.domain import Target
from mana_llm.routing.targets import ALIAS_PREFIX

log = logging.getLogger(__name__)

_ALIAS_KEYS = frozenset(
    {
        "description",
        "chain",
        "first_token_timeout_s",
        "attempt_timeout_s",
        "cache",
        "retries",
        "buffer",
        "hedge_after_s",
    }
)
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class AliasFileError(ValueError):
    """aliases.yaml does not validate; the message names the line."""


@attrs.frozen
class Alias:
    name: str
    description: str
    chain: tuple[Target, ...]
    first_token_timeout_s: float | None = None
    attempt_timeout_s: float | None = None
    cache: bool | None = None  # True: cache sampled answers too; False: never; None: deterministic
    retries: int | None = None  # same-target retries per entry; None: RETRIES
    buffer: bool = (
        False  # streams generated in full before anything is sent (rescued, never spliced)
    )
    hedge_after_s: float | None = None  # start the next entry beside one still silent this long

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "chain": [t.resolved for t in self.chain],
        }
        if self.first_token_timeout_s is not None:
            out["first_token_timeout_s"] = self.first_token_timeout_s
        if self.attempt_timeout_s is not None:
            out["attempt_timeout_s"] = self.attempt_timeout_s
        if self.cache is not None:
            out["cache"] = self.cache
        if self.retries is not None:
            out["retries"] = self.retries
        if self.buffer:
            out["buffer"] = True
        if self.hedge_after_s is not None:
            out["hedge_after_s"] = self.hedge_after_s
        return out


@attrs.frozen
class AliasTable:
    aliases: Mapping[str, Alias] = attrs.field(factory=dict)
    loaded_at: float | None = None  # wall-clock seconds
    content_hash: str | None = None
    source: str | None = None

    def get(self, name: str) -> Alias | None:
        return self.aliases.get(name)


def parse_alias_table(
    text: str, providers: Collection[str], *, source: str, loaded_at: float
) -> AliasTable:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise AliasFileError(f"{source}{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise AliasFileError(f"{source}: not valid YAML: {exc}") from None
    if root is None:
        raise AliasFileError(f"{source}: the file is empty")
    top = _mapping(root, source, "the file")
    unknown = [k for k in top if k != "aliases"]
    if unknown:
        raise AliasFileError(f"{source}:{_line(top[unknown[0]][0])}: unknown key {unknown[0]!r}")
    if "aliases" not in top:
        raise AliasFileError(f"{source}:{_line(root)}: the file needs an 'aliases' mapping")
    aliases: dict[str, Alias] = {}
    for name, (key_node, value_node) in _mapping(top["aliases"][1], source, "'aliases'").items():
        where = f"{source}:{_line(key_node)}"
        if not name.startswith(ALIAS_PREFIX) or len(name) == len(ALIAS_PREFIX):
            raise AliasFileError(f"{where}: alias {name!r} must be named {ALIAS_PREFIX}<class>")
        aliases[name] = _alias(name, value_node, providers, source)
    return AliasTable(aliases, loaded_at, content_hash(text), source)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alias(name: str, node: yaml.Node, providers: Collection[str], source: str) -> Alias:
    fields = _mapping(node, source, f"alias {name!r}")
    for key, (key_node, _) in fields.items():
        if key not in _ALIAS_KEYS:
            raise AliasFileError(
                f"{source}:{_line(key_node)}: alias {name!r} has unknown key {key!r}"
            )
    if "chain" not in fields:
        raise AliasFileError(f"{source}:{_line(node)}: alias {name!r} has no chain")
    chain_node = fields["chain"][1]
    if not isinstance(chain_node, yaml.SequenceNode) or not chain_node.value:
        raise AliasFileError(
            f"{source}:{_line(chain_node)}: the chain of {name!r} must be a non-empty list"
        )
    chain = tuple(_target(item, providers, source) for item in chain_node.value)
    description = fields.get("description", (None, None))[1]
    return Alias(
        name=name,
        description=_scalar(description, source, str) if description is not None else "",
        chain=chain,
        first_token_timeout_s=_seconds(fields, "first_token_timeout_s", source),
        attempt_timeout_s=_seconds(fields, "attempt_timeout_s", source),
        cache=_boolean(fields, "cache", source),
        retries=_count(fields, "retries", source),
        buffer=bool(_boolean(fields, "buffer", source)),
        hedge_after_s=_seconds(fields, "hedge_after_s", source),
    )


def _target(node: yaml.Node, providers: Collection[str], source: str) -> Target:
    text = _scalar(node, source, str)
    provider, sep, model = text.partition("/")
    if not sep or not model:
        raise AliasFileError(f"{source}:{_line(node)}: chain entry {text!r} must be provider/model")
    if provider not in providers:
        known = ", ".join(sorted(providers))
        raise AliasFileError(
            f"{source}:{_line(node)}: unknown provider {provider!r} (known: {known})"
        )
    return Target(provider, model)


def _seconds(fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, source: str) -> float | None:
    if key not in fields:
        return None
    node = fields[key][1]
    value: float = _scalar(node, source, float)
    if not value > 0 or value == float("inf"):
        raise AliasFileError(f"{source}:{_line(node)}: {key} must be a positive number of seconds")
    return value


def _count(fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, source: str) -> int | None:
    if key not in fields:
        return None
    node = fields[key][1]
    text = str(_scalar(node, source, str))
    if not text.isdigit() or int(text) > 10:
        raise AliasFileError(f"{source}:{_line(node)}: {key} must be a whole number from 0 to 10")
    return int(text)


def _boolean(fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, source: str) -> bool | None:
    if key not in fields:
        return None
    node = fields[key][1]
    value = _BOOLEANS.get(str(_scalar(node, source, str)).lower())
    if value is None:
        raise AliasFileError(f"{source}:{_line(node)}: {key} must be true or false")
    return value


def _mapping(node: yaml.Node, source: str, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise AliasFileError(f"{source}:{_line(node)}: {what} must be a mapping")
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node, source, str)
        if key in out:
            raise AliasFileError(f"{source}:{_line(key_node)}: {key!r} appears twice")
        out[key] = (key_node, value_node)
    return out


def _scalar(node: yaml.Node, source: str, kind: type[str] | type[float]) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise AliasFileError(f"{source}:{_line(node)}: expected a {kind.__name__}")
    if kind is str:
        return node.value
    try:
        return float(node.value)
    except ValueError:
        raise AliasFileError(f"{source}:{_line(node)}: {node.value!r} is not a number") from None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


@attrs.define(eq=False)
class AliasStore:
    """Owns the current table; `reload` swaps in a new one or keeps the last good one."""

    path: str
    providers: Collection[str]
    wall_clock: Callable[[], float]
    read_text: Callable[[str], str]
    on_reload: Callable[[str], None] = lambda result: None
    _table: AliasTable = attrs.field(factory=AliasTable)
    last_error: str | None = None

    @property
    def table(self) -> AliasTable:
        return self._table

    def load(self) -> None:
        """Parse, validate and swap in the file's table; raise on any problem (start-up)."""
        text = self.read_text(self.path)
        table = parse_alias_table(
            text, self.providers, source=self.path, loaded_at=self.wall_clock()
        )
        self._table = table
        self.last_error = None
        log.info(
            "aliases loaded from %s: %d aliases, hash %s",
            self.path,
            len(table.aliases),
            table.content_hash,
        )

    def reload(self) -> bool:
        """Like load, but a bad file keeps the previous table (logged, counted): False."""
        try:
            self.load()
        except (OSError, UnicodeDecodeError, AliasFileError) as exc:
            self.last_error = str(exc)
            log.error("alias reload failed, keeping the previous table: %s", exc)
            self.on_reload("error")
            return False
        self.on_reload("success")
        return True


async def run_alias_watch(
    store: AliasStore,
    interval_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """ALIASES_WATCH_INTERVAL: every interval, the file's content hash; when it changed, a
    reload exactly as SIGHUP does (a bad file keeps the last good table and is reported once,
    not every interval). For a mounted ConfigMap, which changes with nobody to send SIGHUP."""
    task_status.started()
    last = store.table.content_hash
    while True:
        await trio.sleep(interval_s)
        try:
            digest = content_hash(store.read_text(store.path))
        except (OSError, UnicodeDecodeError):
            digest = None  # gone or unreadable for now: reload says why, once
        if digest != last:
            last = digest
            store.reload()
