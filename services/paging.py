"""One page of a list, as every list of the web app and the JSON API answers: the items, the
total across all pages, and where the page starts.

Lists never answer everything at once (an organisation can have many thousands of applicants):
``limit`` is kept to 1..:data:`MAX_LIMIT` and ``offset`` to 0 or more, whatever the caller asked.

>>> page = Page(items=["a", "b"], total=5, offset=0, limit=2)
>>> page.as_json(str.upper)
{'items': ['A', 'B'], 'total': 5, 'offset': 0, 'limit': 2}
>>> page.next_offset, page.previous_offset
(2, None)
>>> clamp(-3, 10_000)
(0, 200)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def clamp(offset: int | None, limit: int | None) -> tuple[int, int]:
    """``(offset, limit)`` made sane: offset at least 0, limit within 1..MAX_LIMIT (None: the default)."""
    limit = DEFAULT_LIMIT if limit is None else limit
    return max(0, offset or 0), min(MAX_LIMIT, max(1, limit))


@dataclass(frozen=True)
class Page(Generic[T]):
    """``items`` from ``offset`` on, at most ``limit`` of them, of ``total`` in all."""

    items: list[T]
    total: int
    offset: int
    limit: int

    def __post_init__(self) -> None:
        offset, limit = clamp(self.offset, self.limit)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "limit", limit)

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts, or None on the last page."""
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def previous_offset(self) -> int | None:
        """Where the previous page starts, or None on the first page."""
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    def as_json(self, item_json: Callable[[T], Any]) -> dict[str, Any]:
        return {
            "items": [item_json(item) for item in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }
