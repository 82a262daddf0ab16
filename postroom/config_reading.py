"""Reading a config file's tables: keys checked against the section's, values against their type.

A key a section does not have (``[sync] intervall = 60``) is an error naming the key and the
nearest one it does have: a typo is never silently ignored. :mod:`postroom.config` reads each
section with these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from postroom.errors import ConfigError
from postroom.urls import is_loopback_host


def keys_of(cls: type) -> tuple[str, ...]:
    """The keys of a section: its dataclass's fields (but those marked ``setting: False``)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("setting", True))


def unknown_key(where: str, key: str, known: Iterable[str], source: str) -> ConfigError:
    """``Unknown setting sync.intervall in FILE; did you mean sync.interval?``"""
    known = sorted(known)
    prefix = f"{where}." if where else ""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"the known ones are {', '.join(known)}."
    return ConfigError(f"Unknown setting {prefix + key!r} in {source}; {hint}")


class Table:
    """One ``[section]`` of the file (``name`` "" for the top level), its keys checked."""

    def __init__(self, doc: Mapping[str, Any], name: str, keys: Iterable[str], source: str) -> None:
        value = doc.get(name, {}) if name else doc
        if not isinstance(value, dict):
            raise ConfigError(f"Setting [{name}] must be a table.")
        keys = tuple(keys)
        for key in value:
            if key not in keys:
                raise unknown_key(name, key, keys, source)
        self.values, self.name = value, name

    def where(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.values:
            return default
        value = self.values[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            section = self.name or "top level"
            raise ConfigError(f"Setting {section}.{key} must be a {want}, not {value!r}.")
        return value


def choice(value: str, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"Setting {where} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def float_env(env: Mapping[str, str], name: str, default: float) -> float:
    if name not in env:
        return default
    try:
        return float(env[name])
    except ValueError:
        raise ConfigError(f"Environment variable {name} must be a number of seconds, not {env[name]!r}.") from None


def env_list(env: Mapping[str, str], name: str, t: Table, key: str) -> tuple[str, Any]:
    """A list setting, or its comma-separated environment variable: (where it came from, value)."""
    if env.get(name):
        return f"Environment variable {name}", [v.strip() for v in env[name].split(",") if v.strip()]
    return f"Setting {t.where(key)}", t.values.get(key, [])


def endpoint(value: str, where: str) -> str:
    """An https URL, or http for this machine only (the local stand-ins)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"Setting {where} must be an https URL, not {value!r}.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(f"Setting {where} must use https (plain http only for this machine), not {value!r}.")
    return value


def https_url(value: str, where: str, example: str) -> str:
    """An https URL with a path: msal and the Graph backend refuse anything else (even on loopback)."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"Setting {where} must be an https URL such as {example}, not {value!r}.")
    return value.rstrip("/")
