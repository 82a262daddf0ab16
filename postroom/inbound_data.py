"""Structured data in inbound mail: a JSON or YAML document at the start of a body, or a JSON
part, read liberally and safely. Pure functions over text, no I/O.

People and systems answer the processing mailbox in many shapes, so the policy is to accept
what a careful reader would accept and to refuse what could hurt:

* **Where data is found** (:func:`data_from_text`): a JSON object at the very start of the text
  (whatever follows it is free text), or a YAML mapping at the start:

  - a YAML *stream*: when a line ``---`` (or ``...``) ends the first document, that document is
    the data if it is a mapping, and everything after the separator is free text. The text is
    split at the separator line before parsing, so free text that is not valid YAML never
    spoils the data (``safe_load_all`` would fail on it);
  - no separator: the whole text is data when it is one YAML mapping; otherwise its first
    paragraph (up to the first blank line) is, when it is a mapping of at least two keys
    (a single line such as ``Hi Bob: thanks`` is prose, not data).

  A JSON *part* (``application/json`` or ``…+json``) is read by :func:`data_from_json` and
  takes precedence over the text (:mod:`postroom.inbound`).
* **Keys** (:func:`normalise_key`, :func:`canonical_data`): top-level keys are matched
  case-insensitively, accents ignored, any run of punctuation or spacing read as one ``_``
  (``"First Name"``, ``"first-name"``, ``"FIRST.NAME"`` → ``first_name``), and then mapped
  through the organisation's aliases (``{"first_name": ["vorname", "prénom", "nombre"]}``).
  When two keys land on the same name the first wins and a defect says so. Nested values are
  kept as parsed; dates and timestamps YAML recognises become ISO 8601 strings and non-string
  keys strings, so the data is always JSON-serialisable.
* **Bounds**: at most :data:`MAX_DATA_CHARS` characters of a body and :data:`MAX_JSON_PART`
  bytes of a JSON part are parsed; nesting deeper than :data:`MAX_DEPTH` is refused. YAML is
  read with a :class:`yaml.SafeLoader` that refuses anchors and aliases outright (the
  "billion laughs" bomb needs them, and no honest form answer does), so no tag can construct
  a Python object and no document can expand beyond its own size.

Every function returns what it refused as human-readable defects rather than raising.

>>> data_from_text("First Name: Ada\\nE-Mail: ada@example.org\\n\\nSee you soon!").data
{'first_name': 'Ada', 'e_mail': 'ada@example.org'}
>>> normalise_key("  Prénom / NAME ")
'prenom_name'
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import yaml

__all__ = [
    "MAX_DATA_CHARS",
    "MAX_DEPTH",
    "MAX_JSON_PART",
    "DataResult",
    "alias_table",
    "canonical_data",
    "data_from_json",
    "data_from_text",
    "normalise_key",
]

MAX_DATA_CHARS = 64 * 1024  # of a body searched for a leading JSON or YAML document
MAX_JSON_PART = 1024 * 1024  # bytes of an application/json part parsed
MAX_DEPTH = 32  # nesting of a data document; anything deeper is refused
MAX_KEYS = 1000  # top-level keys kept

_SEPARATOR = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_NON_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True, slots=True)
class DataResult:
    """What a text or part yielded: ``data`` (top-level keys canonical, see
    :func:`canonical_data`), ``source`` (``"json"``, ``"yaml"``, ``"json part"`` or None when
    there was no data), ``rest`` (the free text after the data; the whole text when there was
    none) and the ``defects`` met on the way."""

    data: dict[str, Any]
    source: str | None
    rest: str
    defects: tuple[str, ...] = ()


# --------------------------------------------------------------------------- keys


def normalise_key(key: str) -> str:
    """A key as it is matched: case-folded, accents removed, every run of punctuation or
    spacing one ``_``, none at either end (``"E-Mail Address"`` → ``"e_mail_address"``).
    Scripts without case or accents (``"名前"``) are kept as they are."""
    decomposed = unicodedata.normalize("NFKD", key.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub("_", unicodedata.normalize("NFC", stripped)).strip("_")


def alias_table(aliases: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Normalised spelling → canonical key, from ``{"first_name": ["vorname", "prénom"]}``.
    Each canonical key is also its own spelling; an alias claimed by two canonical keys keeps
    the first."""
    table: dict[str, str] = {}
    for canonical, spellings in (aliases or {}).items():
        target = normalise_key(canonical)
        if not target:
            continue
        for spelling in (canonical, *spellings):
            table.setdefault(normalise_key(spelling), target)
    return table


def canonical_data(value: Mapping[Any, Any], table: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``value`` with canonical top-level keys (normalised, then through ``table``) and
    JSON-ready values; the first of two keys that land on one name wins. Returns the data and
    its defects."""
    out: dict[str, Any] = {}
    defects: list[str] = []
    for raw_key, item in value.items():
        name = normalise_key(str(raw_key))
        key = table.get(name, name)
        if not key:
            defects.append(f"data key {str(raw_key)[:40]!r} has no letters or digits, dropped")
        elif key in out:
            defects.append(f"data key {str(raw_key)[:40]!r} repeats {key!r}, dropped")
        elif len(out) >= MAX_KEYS:
            defects.append(f"more than {MAX_KEYS} data keys, the rest dropped")
            break
        else:
            out[key] = _jsonable(item)
    return out, defects


def _jsonable(value: Any) -> Any:
    """Dates as ISO 8601 text, bytes as text, sets as lists, keys as strings; the rest as is."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep ``value`` nests, counting no further than ``limit + 1`` (iterative)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > limit:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _accept(parsed: Any, source: str, rest: str, table: Mapping[str, str], defects: list[str]) -> DataResult | None:
    """A result for ``parsed`` when it is a mapping of acceptable depth; None otherwise."""
    if not isinstance(parsed, dict):
        return None
    if _depth(parsed) > MAX_DEPTH:
        defects.append(f"{source} data nested deeper than {MAX_DEPTH} levels, ignored")
        return None
    data, key_defects = canonical_data(parsed, table)
    return DataResult(data, source, rest, tuple(defects + key_defects))


# --------------------------------------------------------------------------- JSON


def data_from_json(payload: str, table: Mapping[str, str], source: str = "json part") -> DataResult:
    """The object of a JSON document (a part's text). Anything else (an array, invalid JSON,
    nesting too deep, more than :data:`MAX_JSON_PART` characters) gives no data and a
    defect; ``rest`` is always empty."""
    defects: list[str] = []
    if len(payload) > MAX_JSON_PART:
        return DataResult({}, None, "", (f"{source} larger than {MAX_JSON_PART} bytes, ignored",))
    try:
        parsed = json.loads(payload)
    except RecursionError:
        return DataResult({}, None, "", (f"{source} nested too deeply, ignored",))
    except ValueError as exc:
        return DataResult({}, None, "", (f"{source} is not valid JSON ({_short(exc)}), ignored",))
    result = _accept(parsed, source, "", table, defects)
    if result is None:
        if not defects:
            defects.append(f"{source} is not a JSON object, ignored")
        return DataResult({}, None, "", tuple(defects))
    return result


def _json_at_start(text: str, table: Mapping[str, str]) -> DataResult | None:
    """A JSON object that opens ``text`` (the rest is free text), or None with defects noted."""
    window = text[:MAX_DATA_CHARS]
    try:
        parsed, end = json.JSONDecoder().raw_decode(window)
    except RecursionError:
        return DataResult({}, None, text, ("JSON at the start of the body nested too deeply, read as text",))
    except ValueError as exc:
        if len(text) > MAX_DATA_CHARS:
            reason = f"JSON at the start of the body longer than {MAX_DATA_CHARS} characters"
        else:
            reason = f"JSON at the start of the body is not valid ({_short(exc)})"
        return DataResult({}, None, text, (f"{reason}, read as text",))
    defects: list[str] = []
    result = _accept(parsed, "json", text[end:].lstrip(), table, defects)
    return result or DataResult({}, None, text, tuple(defects))


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- YAML


class AliasRefused(yaml.YAMLError):
    """A YAML document used an anchor or an alias (refused: see the module docstring)."""


class _NoAliasLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` that refuses anchors and aliases while composing, before any
    node could be shared or expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise AliasRefused("YAML anchors and aliases are not accepted")
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> tuple[Any, str | None]:
    """One YAML document parsed safely, and why it failed (None when it did not)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data(), None
    except AliasRefused as exc:
        return None, str(exc)
    except RecursionError:
        return None, "nested too deeply"
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # constructors raise ValueError on bad dates
        return None, _short(exc)
    finally:
        loader.dispose()


def _yaml_at_start(text: str, table: Mapping[str, str]) -> DataResult | None:
    """A YAML mapping that opens ``text`` (see the module docstring), or None."""
    window = text[:MAX_DATA_CHARS]
    body = window
    opening = _SEPARATOR.match(body)
    if opening:  # a stream that opens with "---"
        body = body[opening.end() :].lstrip("\r\n")
    separator = _SEPARATOR.search(body)
    if separator is not None:
        document, rest = body[: separator.start()], body[separator.end() :]
        candidates = [(document, rest.lstrip("\r\n") + text[len(window) :], 1)]
    elif len(text) <= MAX_DATA_CHARS:
        paragraph = _BLANK_LINE.search(body)
        candidates = [(body, "", 1)]
        if paragraph is not None:
            candidates.append((body[: paragraph.start()], body[paragraph.end() :], 2))
    else:
        paragraph = _BLANK_LINE.search(body)
        if paragraph is None:
            return None
        candidates = [(body[: paragraph.start()], body[paragraph.end() :] + text[len(window) :], 2)]
    defects: list[str] = []
    for document, rest, min_keys in candidates:
        parsed, error = _load_yaml(document)
        if error is not None:
            if error.startswith("YAML anchors") or error == "nested too deeply":
                defects.append(f"YAML at the start of the body refused: {error}")
                return DataResult({}, None, text, tuple(defects))
            continue
        if isinstance(parsed, dict) and len(parsed) >= min_keys:
            return _accept(parsed, "yaml", rest, table, defects) or DataResult({}, None, text, tuple(defects))
    return DataResult({}, None, text, tuple(defects)) if defects else None


# --------------------------------------------------------------------------- the text


def data_from_text(text: str, aliases: Mapping[str, Sequence[str]] | None = None) -> DataResult:
    """The data at the start of a body's text and the free text after it (see the module
    docstring for the policy). Text without data comes back whole as ``rest``."""
    table = alias_table(aliases)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        found = _json_at_start(stripped, table)
        if found is not None and found.source is not None:
            return found
        # not JSON after all: try it as YAML (flow mappings are YAML too), keep the defects
        yaml_found = _yaml_at_start(stripped, table)
        if yaml_found is not None and yaml_found.source is not None:
            return yaml_found
        return DataResult({}, None, text, found.defects if found else ())
    found = _yaml_at_start(stripped, table)
    if found is None:
        return DataResult({}, None, text)
    return found if found.source is not None else DataResult({}, None, text, found.defects)
