"""Threading: the References graph decides, subject only as a guarded tie-breaker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from postroom.mime import parse_headers
from sync.conversations import (
    ThreadIndex,
    ThreadSummary,
    is_reply_subject,
    normalise_subject,
    subject_tiebreak,
    thread_keys,
)

NOW = datetime(2024, 3, 12, 9, 0, tzinfo=UTC)


def msg(**fields: str):
    names = {"message_id": "Message-ID", "in_reply_to": "In-Reply-To", "reply_to": "Reply-To"}
    lines = [f"{names.get(k, k.capitalize())}: {v}" for k, v in fields.items()]
    return parse_headers(("\r\n".join(lines) + "\r\n\r\n").encode())


@pytest.mark.parametrize(
    ("subject", "normalised", "is_reply"),
    [
        ("Your application", "your application", False),
        ("Re: Your application", "your application", True),
        ("RE: re: Re:Your application", "your application", True),
        ("Fwd: Fw: FW: Your application", "your application", True),
        ("AW: WG: Ihre Bewerbung", "ihre bewerbung", True),
        ("SV: VS: Antw: Odp: RIF: Hej", "hej", True),
        ("Réf. : TR: Votre candidature", "votre candidature", True),
        ("Ответ: Ваше резюме", "ваше резюме", True),
        ("回复：你的申请", "你的申请", True),
        ("转发: 你的申请", "你的申请", True),
        ("Re[2]: Re(3): Re^4: Hello", "hello", True),
        ("[hr-team] Re: [jobs] Hello", "hello", True),
        ("[hr-team] Hello", "hello", False),  # a list tag is not a reply
        ("  Re:   Hello   World ", "hello world", True),
        ("Re:", "", False),  # nothing left to match on
        ("Reference check", "reference check", False),
        ("Ref: 12345", "ref: 12345", False),
        ("Regarding the role", "regarding the role", False),
        ("", "", False),
    ],
)
def test_subject_normalisation(subject, normalised, is_reply):
    assert normalise_subject(subject) == normalised
    assert is_reply_subject(subject) is is_reply


def test_thread_keys_cover_own_id_references_and_in_reply_to():
    h = msg(message_id="<c@x>", references="<a@x> <b@x>", in_reply_to="<b@x>")
    assert thread_keys(h) == ("<c@x>", "<a@x>", "<b@x>")


def test_thread_keys_for_message_without_id_are_stable():
    a = msg(From="a@x.com", To="b@x.com", Subject="hi", Date="Mon, 1 Jan 2024 00:00:00 +0000")
    b = msg(From="a@x.com", To="b@x.com", Subject="hi", Date="Mon, 1 Jan 2024 00:00:00 +0000")
    assert thread_keys(a) == thread_keys(b)
    assert thread_keys(a)[0].endswith("@postroom.invalid>")


def test_children_before_parents_end_up_together():
    index = ThreadIndex()
    grandchild = index.add(thread_keys(msg(message_id="<c@x>", references="<a@x> <b@x>")))
    child = index.add(thread_keys(msg(message_id="<b@x>", references="<a@x>")))
    root = index.add(thread_keys(msg(message_id="<a@x>")))
    assert grandchild == child == root


def test_message_linking_two_threads_merges_them():
    index = ThreadIndex()
    first = index.add(["<a@x>"])
    second = index.add(["<b@x>"])
    assert first != second
    index.drain()
    joined = index.add(["<c@x>", "<a@x>", "<b@x>"])
    assert index.find("<a@x>") == index.find("<b@x>") == index.find("<c@x>") == joined
    assert joined == first  # the older thread survives
    changes = index.drain()
    assert changes.merges == [(second, first)]
    assert changes.keys == {"<b@x>": first, "<c@x>": first}


def test_same_message_id_seen_twice_is_one_thread():
    index = ThreadIndex()
    keys = thread_keys(msg(message_id="<a@x>", references="<r@x>"))
    assert index.add(keys) == index.add(keys)
    assert len(index.drain().new_threads) == 1


def test_references_loop_terminates_in_one_thread():
    index = ThreadIndex()
    a = index.add(thread_keys(msg(message_id="<a@x>", references="<b@x> <a@x>")))
    b = index.add(thread_keys(msg(message_id="<b@x>", references="<a@x>")))
    assert a == b == index.find("<a@x>") == index.find("<b@x>")


def test_unrelated_messages_stay_apart():
    index = ThreadIndex()
    assert index.add(["<a@x>"]) != index.add(["<b@x>"])
    assert index.find("<unknown@x>") is None


def test_persisted_threads_win_merges_and_are_not_re_reported():
    index = ThreadIndex.from_pairs([("<a@x>", 7), ("<b@x>", 3)])
    assert index.find("<a@x>") == 7
    assert index.drain().keys == {}  # seeding reports nothing
    new = index.add(["<n@x>"])
    assert new < 0  # provisional ids never collide with persisted ones
    joined = index.add(["<c@x>", "<a@x>", "<b@x>", "<n@x>"])
    assert joined == 3  # the oldest persisted thread survives
    changes = index.drain()
    assert sorted(changes.merges) == sorted([(7, 3), (new, 3)])
    assert changes.new_threads == []  # the provisional thread was merged away
    assert changes.keys == {"<a@x>": 3, "<c@x>": 3, "<n@x>": 3}


def test_merge_chains_report_the_final_winner():
    index = ThreadIndex.from_pairs([("<a@x>", 1), ("<b@x>", 2), ("<c@x>", 3)])
    index.add(["<b@x>", "<c@x>"])  # 3 -> 2
    index.add(["<a@x>", "<b@x>"])  # 2 -> 1
    assert index.drain().merges == [(3, 1), (2, 1)]
    assert index.resolve(3) == 1


def test_caller_supplied_ids():
    ids = iter([100, 101])
    index = ThreadIndex(new_id=lambda: next(ids))
    assert index.add(["<a@x>"]) == 100
    assert index.add(["<b@x>"]) == 101
    assert index.drain().new_threads == [100, 101]


def test_empty_keys_rejected():
    with pytest.raises(ValueError):
        ThreadIndex().add([])


# --------------------------------------------------------------------------- subject tie-break

OWN = ("recruiter@acme.example",)


def thread(tid: int, subject: str, people: set[str], last: datetime | None = NOW) -> ThreadSummary:
    return ThreadSummary(thread_id=tid, subject=subject, participants=frozenset(people), last_date=last)


def reply(subject: str = "Re: Hello", sender: str = "Bob <Bob.Smith+x@gmail.com>", **extra: str):
    fields = {
        "message_id": "<new@x>",
        "From": sender,
        "To": "recruiter@acme.example",
        "Subject": subject,
        "Date": "Tue, 12 Mar 2024 12:00:00 +0000",
    }
    fields.update(extra)
    return msg(**fields)


BOB_THREAD = thread(1, "Hello", {"bobsmith@gmail.com", "recruiter@acme.example"})
ANN_THREAD = thread(2, "Hello", {"ann@example.com", "recruiter@acme.example"})


@pytest.mark.parametrize(
    ("candidates", "message", "expected"),
    [
        # the one thread with the same subject and the same applicant
        ([BOB_THREAD, ANN_THREAD], reply(), 1),
        # same "Re: Hello" from an unrelated person: no shared participant but the recruiter
        ([BOB_THREAD], reply(sender="carol@example.org"), None),
        # not a reply subject: a new conversation, even with the same person
        ([BOB_THREAD], reply(subject="Hello"), None),
        # different subject
        ([BOB_THREAD], reply(subject="Re: Hello again"), None),
        # the thread went quiet more than 30 days ago
        ([thread(1, "Hello", {"bobsmith@gmail.com"}, NOW - timedelta(days=31))], reply(), None),
        ([thread(1, "Hello", {"bobsmith@gmail.com"}, NOW - timedelta(days=29))], reply(), 1),
        ([thread(1, "Hello", {"bobsmith@gmail.com"}, None)], reply(), None),
        # two threads qualify: ambiguous, so neither
        ([BOB_THREAD, thread(3, "Re: hello", {"bobsmith@gmail.com"})], reply(), None),
        # a message with references is threaded by them, never by subject
        ([BOB_THREAD], reply(in_reply_to="<other@x>"), None),
        ([BOB_THREAD], reply(references="<other@x>"), None),
        # forwarded with the candidate's prefixes
        ([thread(1, "Fwd: [jobs] Hello", {"bobsmith@gmail.com"})], reply(subject="AW: Hello"), 1),
        ([], reply(), None),
    ],
)
def test_subject_tiebreak(candidates, message, expected):
    result = subject_tiebreak(candidates, message, own_addresses=OWN)
    assert (result.thread_id if result else None) == expected


def test_same_re_hello_from_unrelated_people_gives_two_threads():
    """End to end: two reference-less "Re: Hello" messages from different people
    to the same recruiter must not be joined through the recruiter."""
    index = ThreadIndex()
    first = reply(sender="bob@example.com", message_id="<1@x>")
    tid = index.add(thread_keys(first))
    summary = thread(tid, first.subject, {"bob@example.com", "recruiter@acme.example"})
    second = reply(sender="carol@example.com", message_id="<2@x>")
    assert subject_tiebreak([summary], second, own_addresses=OWN) is None
    assert index.add(thread_keys(second)) != tid
