"""The one JSON form of the backends' sync cursors.

Every backend keeps its cursor as a small frozen dataclass whose ``dump`` and ``load``
go through :func:`dump` and :func:`load`: a JSON object with the backend's own keys plus
``"v": 1``, keys sorted, ``None`` values left out. The stored text is opaque to the
engine, so its shape must never change under cursors already in a database::

    IMAP   {"exists": 100, "highestmodseq": 431, "uidnext": 120, "uidvalidity": 7, "v": 1}
    Gmail  {"historyId": "123456", "v": 1}
    Graph  {"deltaLink": "https://graph.microsoft.com/v1.0/me/mailFolders('AAMk...')/...", "v": 1}
    EWS    {"folder": "AAMkF...", "syncState": "H4sIAAAA...", "v": 1}

Text that is not such an object, lacks a key, holds a value of the wrong kind or another
version is a :class:`~providers.errors.CursorInvalidError`: the engine resyncs that folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from providers.errors import CursorInvalidError

VERSION = 1
T = TypeVar("T")


def dump(fields: Mapping[str, object]) -> str:
    """The cursor text for ``fields`` (JSON keys to values; None values are left out).

    >>> dump({"historyId": "4242", "flags": None})
    '{"historyId": "4242", "v": 1}'
    """
    data = {key: value for key, value in fields.items() if value is not None}
    data["v"] = VERSION
    return json.dumps(data, sort_keys=True)


def load(text: str, backend: str, read: Callable[[Mapping[str, Any]], T]) -> T:
    """``read(fields)`` of the JSON object in ``text``; a ``ValueError``, ``KeyError`` or
    ``TypeError`` there, or a version other than 1, is a :class:`CursorInvalidError` naming
    ``backend``.

    >>> load('{"historyId": "4242", "v": 1}', "Gmail", lambda f: int(f["historyId"]))
    4242
    """
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        version = int(data["v"])
        if version == VERSION:
            return read(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise CursorInvalidError(f"unreadable {backend} cursor {text[:80]!r}") from exc
    raise CursorInvalidError(f"{backend} cursor of version {version}, not {VERSION}: {text[:80]!r}")
