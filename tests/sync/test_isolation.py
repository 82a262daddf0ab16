"""Narrowing a failed batch down to the messages at fault (sync.isolation): a table of servers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from providers.errors import ProtocolError
from sync.isolation import isolate


class Server:
    """Answers a batch with its ids, unless the batch holds a broken one (or everything is broken)."""

    def __init__(
        self,
        broken: set[str] = frozenset(),
        *,
        names_culprit: bool = False,
        flaky_once: set[str] = frozenset(),
        down: bool = False,
    ) -> None:  # type: ignore[assignment]
        self.broken, self.names_culprit, self.flaky, self.down = broken, names_culprit, set(flaky_once), down
        self.calls: list[list[str]] = []

    def fetch(self, ids: Sequence[str]) -> list[str]:
        self.calls.append(list(ids))
        bad = [i for i in ids if i in self.broken or i in self.flaky]
        if self.down or bad:
            self.flaky -= set(bad)
            raise ProtocolError("unreadable", remote_id=bad[0] if self.names_culprit and bad else None)
        return list(ids)


IDS = [str(i) for i in range(16)]


@pytest.mark.parametrize(
    ("server", "items", "failed", "max_calls"),
    [
        (Server(), IDS, set(), 1),
        (Server({"5"}), [i for i in IDS if i != "5"], {"5"}, 10),  # halves down to it, then once more alone
        (Server({"5", "6", "12"}), [i for i in IDS if i not in {"5", "6", "12"}], {"5", "6", "12"}, 20),
        (Server({"5"}, names_culprit=True), [i for i in IDS if i != "5"], {"5"}, 2),  # named: straight to it
        (Server(flaky_once={"7"}), IDS, set(), 12),  # failed once, fine the next time: not quarantined
    ],
)
def test_a_batch_is_narrowed_down_to_the_messages_at_fault(server, items, failed, max_calls) -> None:  # type: ignore[no-untyped-def]
    got = isolate(server.fetch, IDS)
    assert sorted(got.items, key=int) == items and set(got.failed) == failed and got.complete
    assert len(server.calls) <= max_calls


def test_a_server_that_answers_nothing_fails_the_batch_and_nothing_is_set_aside() -> None:
    with pytest.raises(ProtocolError):
        isolate(Server(down=True).fetch, IDS)


def test_a_single_message_that_fails_twice_is_set_aside() -> None:
    got = isolate(Server({"1"}).fetch, ["1"])
    assert got.items == [] and list(got.failed) == ["1"] and got.failed["1"] == "ProtocolError: unreadable"


def test_narrowing_is_bounded_and_says_when_it_stopped_short() -> None:
    server = Server({str(i) for i in range(0, 16, 2)})  # every other message broken
    got = isolate(server.fetch, IDS, budget=10)
    assert len(server.calls) == 10 and not got.complete
    assert set(got.items) | set(got.failed) < set(IDS)  # what was learnt is kept, the rest waits
