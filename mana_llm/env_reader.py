"""Reading environment variables into typed values; every malformed one is a SettingsError
whose message names the variable and what is wrong (values that may be secret are not shown)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs


class SettingsError(ValueError):
    """A malformed setting; the message names the variable and what is wrong."""


_FLAGS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


@attrs.frozen
class EnvReader:
    env: Mapping[str, str]

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise SettingsError(f"{name}={raw!r} must be {bounds}")
        return value

    def _number(self, name: str, raw: str, what: str) -> float:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not {what}") from None

    def seconds(self, name: str, default: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        value = self._number(name, raw, "a number of seconds")
        if not value > 0 or value == float("inf"):
            raise SettingsError(f"{name}={raw!r} must be a positive number of seconds")
        return value

    def workers(self, name: str) -> int:
        """A number of processes, or `auto`: the cores this process may run on."""
        raw = self._raw(name)
        if raw is not None and raw.lower() == "auto":
            return len(os.sched_getaffinity(0))
        return self.integer(name, 1, low=1, high=256)

    def ratio(self, name: str, default: float) -> float:
        """A fraction such as 0.2 (0 switches the thing off)."""
        raw = self._raw(name)
        if raw is None:
            return default
        value = self._number(name, raw, "a number")
        if not 0 <= value <= 10:
            raise SettingsError(f"{name}={raw!r} must be between 0 and 10")
        return value

    def seconds_or_off(self, name: str) -> float:
        """0, off, false, no (or unset) mean off."""
        raw = self._raw(name)
        if raw is None or _FLAGS.get(raw.lower()) is False:
            return 0.0
        try:
            if float(raw) == 0:
                return 0.0
        except ValueError:
            pass
        return self.seconds(name, 0.0)

    def url(self, name: str, default: str) -> str:
        return self.check_url(name, self._raw(name) or default)

    def check_url(self, name: str, raw: str) -> str:
        """`raw`, one URL that variable `name` gives, checked and without a trailing slash."""
        if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
            raise SettingsError(f"{name}={raw!r} must be an http:// or https:// URL")
        return raw.rstrip("/")

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        value = _FLAGS.get(raw.lower())
        if value is None:
            raise SettingsError(f"{name}={raw!r} must be true or false (1/0, yes/no, on/off)")
        return value

    def redis_url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is not None and not raw.startswith(("redis://", "rediss://", "unix://")):
            # the value may hold a password: name the variable, not the value
            raise SettingsError(f"{name} must be a redis://, rediss:// or unix:// URL")
        return raw

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = (self._raw(name) or default).upper()
        if raw not in allowed:
            raise SettingsError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
        return raw

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())
