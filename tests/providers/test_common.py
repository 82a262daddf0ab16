"""What the backends share (providers.common): cursors, flags, header blocks, retries, msal's HTTP client."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from providers import ews_codec, gmail_history, graph_codec, imap_changes
from providers.common import cursors
from providers.common.http import MsalHttp
from providers.common.messages import HeaderFields, header_block, imap_flags
from providers.common.retry import Backoff, BatchRound, RetryPolicy, run_batch
from providers.errors import AuthError, CursorInvalidError, ProtocolError, ProviderError, TransientError

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
DELTA = "https://graph.microsoft.com/v1.0/me/mailFolders('AAMkAGI2')/messages/delta?$deltatoken=LztZwWjo"

# Cursors exactly as each backend has been storing them: they must load, and dump back unchanged.
STORED = [
    (
        '{"exists": 100, "highestmodseq": 431, "uidnext": 120, "uidvalidity": 7, "v": 1}',
        lambda text: imap_changes.Cursor.load(text),
        imap_changes.Cursor(uidvalidity=7, uidnext=120, exists=100, highestmodseq=431),
    ),
    (
        '{"exists": 3, "flags": "0a1b2c3d4e5f60718293", "uidnext": 4, "uidvalidity": 1, "v": 1}',
        lambda text: imap_changes.Cursor.load(text),
        imap_changes.Cursor(uidvalidity=1, uidnext=4, exists=3, flags="0a1b2c3d4e5f60718293"),
    ),
    (
        '{"historyId": "123456", "v": 1}',
        lambda text: gmail_history.Cursor.load(text),
        gmail_history.Cursor(123456),
    ),
    (
        '{"deltaLink": "' + DELTA + '", "v": 1}',
        lambda text: graph_codec.Cursor.load(text, GRAPH_ROOT),
        graph_codec.Cursor(DELTA),
    ),
    (
        '{"folder": "AAMkF1", "syncState": "H4sIAAAAAAAEAO29", "v": 1}',
        lambda text: ews_codec.Cursor.load(text, "AAMkF1"),
        ews_codec.Cursor("AAMkF1", "H4sIAAAAAAAEAO29"),
    ),
]


@pytest.mark.parametrize(
    ("text", "load", "expected"), STORED, ids=["imap-modseq", "imap-digest", "gmail", "graph", "ews"]
)
def test_a_stored_cursor_still_loads_and_dumps_back_the_same(
    text: str, load: Callable[[str], Any], expected: Any
) -> None:
    cursor = load(text)
    assert cursor == expected
    assert cursor.dump() == text


@pytest.mark.parametrize(
    ("load", "text", "message"),
    [
        (imap_changes.Cursor.load, '{"uidnext": 4, "exists": 3, "v": 1}', "unreadable IMAP cursor"),
        (imap_changes.Cursor.load, '{"uidvalidity": 1, "uidnext": 4, "exists": 3}', "unreadable IMAP cursor"),
        (imap_changes.Cursor.load, '{"uidvalidity": 1, "uidnext": 4, "exists": 3, "v": 2}', "version 2"),
        (imap_changes.Cursor.load, '{"uidvalidity": "x", "uidnext": 4, "exists": 3, "v": 1}', "unreadable"),
        (gmail_history.Cursor.load, "not json", "unreadable Gmail cursor"),
        (gmail_history.Cursor.load, '["historyId", 5]', "unreadable Gmail cursor"),
        (gmail_history.Cursor.load, '{"historyId": "0", "v": 1}', "impossible historyId"),
        (lambda t: graph_codec.Cursor.load(t, GRAPH_ROOT), '{"deltaLink": 5}', "unreadable Graph cursor"),
        (
            lambda t: graph_codec.Cursor.load(t, GRAPH_ROOT),
            '{"deltaLink": "https://evil.example/v1.0/me/mailFolders/x/messages/delta", "v": 1}',
            "another service",
        ),
        (lambda t: ews_codec.Cursor.load(t, "AAMkF2"), STORED[4][0], "another folder"),
        (lambda t: ews_codec.Cursor.load(t, "AAMkF1"), '{"folder": "AAMkF1", "syncState": "", "v": 1}', "another"),
    ],
)
def test_a_cursor_that_cannot_be_used_is_invalid(load: Callable[[str], Any], text: str, message: str) -> None:
    with pytest.raises(CursorInvalidError, match=message):
        load(text)


def test_the_cursor_codec_leaves_out_none_and_sorts_keys() -> None:
    assert cursors.dump({"b": 2, "a": None, "c": "x"}) == '{"b": 2, "c": "x", "v": 1}'
    assert cursors.load('{"b": 2, "v": 1}', "Test", lambda data: data["b"]) == 2


@pytest.mark.parametrize(
    ("states", "flags"),
    [
        ((False, False, False), set()),
        ((True, False, False), {"\\Seen"}),
        ((True, True, False), {"\\Seen", "\\Flagged"}),
        ((False, False, True), {"\\Draft"}),
        ((True, True, True, True), {"\\Seen", "\\Flagged", "\\Draft", "\\Answered"}),
    ],
)
def test_states_become_imap_flags(states: tuple[bool, ...], flags: set[str]) -> None:
    assert imap_flags(*states) == flags


def test_each_backend_maps_its_own_states_to_the_same_flags() -> None:
    assert gmail_history.flags_from_labels(["INBOX", "STARRED"]) == {"\\Seen", "\\Flagged"}
    assert gmail_history.flags_from_labels(["UNREAD", "DRAFT"]) == {"\\Draft"}
    graph = {"isRead": True, "isDraft": False, "flag": {"flagStatus": "flagged"}}
    assert graph_codec.flags_of(graph) == {"\\Seen", "\\Flagged"}
    assert graph_codec.flags_of({"isRead": False, "isDraft": True, "flag": None}) == {"\\Draft"}

    class Item:
        is_read, is_draft, postroom_flag_status = True, False, ews_codec.FLAG_STATUS_FLAGGED

    assert ews_codec.flags_of(Item()) == {"\\Seen", "\\Flagged"}


SENT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "transport", "unfold", "block"),
    [
        (
            HeaderFields(
                message_id="<a@x.test>",
                in_reply_to="<p@x.test>",
                references="<r@x.test>\r\n <p@x.test>",
                author=("Rita Jones", "rita@x.test"),
                sender=("Rita Jones", "rita@x.test"),  # the same as From: left out
                reply_to=[(None, "jobs@x.test")],
                to=[("bob@y.test", "bob@y.test"), ("", "")],  # a name that only repeats the address; no address
                subject="Hello",
                sent=SENT,
            ),
            None,
            False,
            "Message-ID: <a@x.test>\r\nIn-Reply-To: <p@x.test>\r\nReferences: <r@x.test>\r\n <p@x.test>\r\n"
            "From: Rita Jones <rita@x.test>\r\nReply-To: jobs@x.test\r\nTo: bob@y.test\r\nSubject: Hello\r\n"
            "Date: Mon, 02 Mar 2026 09:30:00 +0000\r\n",
        ),
        (
            HeaderFields(references="<r@x.test>\r\n <p@x.test>", author=("Ann", "a@x.test"), sender=("", "s@x.test")),
            None,
            True,  # EWS: every value on one line
            "References: <r@x.test> <p@x.test>\r\nFrom: Ann <a@x.test>\r\nSender: s@x.test\r\n",
        ),
        (
            HeaderFields(message_id="<own@x.test>", subject="Grüße", cc=[("Zoë", "z@x.test")]),
            {"message-id": ("Message-Id", "<transport@x.test>")},  # Graph: the message's own headers win
            False,
            "Message-Id: <transport@x.test>\r\nCc: =?utf-8?q?Zo=C3=AB?= <z@x.test>\r\n"
            "Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n",
        ),
    ],
    ids=["rebuilt", "unfolded", "transport-first"],
)
def test_header_blocks_are_rebuilt_in_one_order(
    fields: HeaderFields, transport: dict[str, tuple[str, str]] | None, unfold: bool, block: str
) -> None:
    assert header_block(fields, transport, unfold=unfold) == block.encode()


def test_graph_and_ews_messages_give_the_same_block_for_the_same_properties() -> None:
    graph = {
        "internetMessageId": "<a@x.test>",
        "from": {"emailAddress": {"name": "Rita", "address": "rita@x.test"}},
        "toRecipients": [{"emailAddress": {"name": "Bob", "address": "bob@y.test"}}],
        "subject": "Hello",
        "sentDateTime": "2026-03-02T09:30:00Z",
        "singleValueExtendedProperties": [{"id": "String 0x1042", "value": "<p@x.test>"}],
    }

    class Mailbox:
        def __init__(self, name: str, email_address: str) -> None:
            self.name, self.email_address = name, email_address

    class Item:
        message_id, in_reply_to, references, subject, datetime_sent = "<a@x.test>", "<p@x.test>", None, "Hello", SENT
        author, sender, reply_to = Mailbox("Rita", "rita@x.test"), None, None
        to_recipients, cc_recipients, bcc_recipients = [Mailbox("Bob", "bob@y.test")], None, None

    expected = (
        b"Message-ID: <a@x.test>\r\nIn-Reply-To: <p@x.test>\r\nFrom: Rita <rita@x.test>\r\nTo: Bob <bob@y.test>\r\n"
        b"Subject: Hello\r\nDate: Mon, 02 Mar 2026 09:30:00 +0000\r\n"
    )
    assert graph_codec.headers_of(graph) == expected
    assert ews_codec.headers_of(Item()) == expected


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("policy", "attempt", "waited", "retry_after", "delay"),
    [
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0), 0, 0.0, None, 1.0),
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0), 3, 7.0, None, 8.0),
        (RetryPolicy(base=1.0, cap=32.0, budget=600.0, max_retries=9), 6, 0.0, None, 32.0),  # capped
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0), 0, 0.0, 5.0, 5.0),  # the server's Retry-After when longer
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0), 0, 0.0, 50.0, 50.0),  # Gmail waits past the cap...
        (RetryPolicy(base=1.0, cap=30.0, budget=60.0, give_up_above_cap=True), 0, 0.0, 50.0, None),  # Graph does not
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0), 4, 50.0, None, None),  # 16 s more would pass the budget
        (RetryPolicy(base=1.0, cap=32.0, budget=60.0, max_retries=2), 2, 0.0, None, None),  # out of retries
    ],
)
def test_retry_policy_delays(
    policy: RetryPolicy, attempt: int, waited: float, retry_after: float | None, delay: float | None
) -> None:
    assert policy.delay(attempt, waited, retry_after) == delay


def test_only_transient_errors_are_retried_and_sends_only_when_throttled() -> None:
    slept: list[float] = []
    backoff = Backoff(RetryPolicy(base=0.5, max_retries=9), slept.append)
    busy = TransientError("503", retry_after=None)
    assert not backoff.retry(AuthError("401"), idempotent=True, throttled=False)
    assert not backoff.retry(ProtocolError("400"), idempotent=True, throttled=False)
    assert not backoff.retry(busy, idempotent=False, throttled=False)  # the send may have been acted on
    assert backoff.retry(busy, idempotent=False, throttled=True)  # a 429 comes before anything is done
    assert backoff.retry(TransientError("429", retry_after=3.0), idempotent=True, throttled=True)
    assert slept == [0.5, 3.0]


Reply = tuple[str, Any]  # ("ok", answer) | ("gone", None) | ("fail", error) | ("refresh", None)


class FakeBatches:
    """Answers batch rounds from a script: each key's replies, one per round it is sent in."""

    def __init__(self, script: dict[str, list[Reply]], whole: list[TransientError] | None = None) -> None:
        self.script, self.whole = script, list(whole or [])
        self.rounds: list[list[str]] = []

    def __call__(self, keys: list[str]) -> BatchRound:
        self.rounds.append(list(keys))
        round_ = BatchRound()
        if self.whole:
            round_.all_failed(keys, self.whole.pop(0))
            return round_
        for key in keys:
            kind, value = self.script[key].pop(0)
            if kind == "ok":
                round_.answered(key, value)
            elif kind == "refresh":
                round_.resend(key)
            elif kind == "fail":
                throttled = isinstance(value, TransientError) and str(value).startswith("429")
                round_.failed(key, value, throttled=throttled)
        return round_


def _run(
    batches: FakeBatches, keys: list[str], answered_before: bool = False, max_retries: int = 3
) -> tuple[dict[str, Any], list[float]]:
    slept: list[float] = []
    backoff = Backoff(RetryPolicy(base=1.0, cap=30.0, budget=60.0, max_retries=max_retries), slept.append)
    return run_batch(keys, batches, backoff, answered_before=lambda: answered_before), slept


def test_a_batch_retries_failed_parts_alone_and_skips_vanished_ones() -> None:
    busy = TransientError("503 busy", retry_after=2.0)
    batches = FakeBatches({"a": [("ok", 1)], "b": [("fail", busy), ("ok", 2)], "c": [("gone", None)]})
    results, slept = _run(batches, ["a", "b", "c"])
    assert results == {"a": 1, "b": 2} and batches.rounds == [["a", "b", "c"], ["b"]] and slept == [2.0]


def test_a_part_refused_for_good_is_a_protocol_error_naming_it() -> None:
    batches = FakeBatches({"a": [("ok", 1)], "b": [("fail", ProtocolError("400 bad"))]})
    with pytest.raises(ProtocolError, match="400 bad") as info:
        _run(batches, ["a", "b"])
    assert info.value.remote_id == "b"


def test_a_refused_grant_in_a_part_stops_the_batch() -> None:
    with pytest.raises(AuthError):
        _run(FakeBatches({"a": [("fail", AuthError("401 again"))]}), ["a"])


def test_a_part_that_keeps_failing_while_the_others_were_answered_is_that_part_s_fault() -> None:
    err = TransientError("500 cannot read it")
    batches = FakeBatches({"a": [("ok", 1)], "b": [("fail", err)] * 4, "c": [("ok", 3)]})
    with pytest.raises(ProtocolError, match=r"500 cannot read it \(every retry\)") as info:
        _run(batches, ["a", "b", "c"])
    assert info.value.remote_id == "b" and len(batches.rounds) == 4  # the first try and 3 retries


@pytest.mark.parametrize("answered_before", [False, True])
def test_a_batch_of_one_that_keeps_failing_is_its_fault_only_if_the_server_answered_other_calls(
    answered_before: bool,
) -> None:
    batches = FakeBatches({"a": [("fail", TransientError("500 cannot read it"))] * 4})
    with pytest.raises(ProviderError) as info:
        _run(batches, ["a"], answered_before=answered_before)
    assert type(info.value) is (ProtocolError if answered_before else TransientError)


def test_when_every_part_keeps_failing_or_some_were_throttled_the_account_backs_off() -> None:
    err = TransientError("503 busy", retry_after=4.0)
    with pytest.raises(TransientError, match=r"503 busy \(2 of 2 calls\)") as info:
        _run(FakeBatches({"a": [("fail", err)] * 4, "b": [("fail", err)] * 4}), ["a", "b"])
    assert type(info.value) is TransientError and info.value.retry_after == 4.0
    throttled = TransientError("429 slow down", retry_after=1.0)
    script: dict[str, list[Reply]] = {"a": [("ok", 1)], "b": [("fail", throttled), ("fail", err), ("fail", err)]}
    with pytest.raises(TransientError, match=r"\(1 of 2 calls\)") as info:
        _run(FakeBatches(script), ["a", "b"], max_retries=2)
    assert type(info.value) is TransientError  # once throttled, nothing says the message is at fault


def test_a_whole_batch_that_fails_is_sent_again_then_backs_off() -> None:
    down = TransientError("batch 503", retry_after=1.0)
    batches = FakeBatches({"a": [("ok", 1)], "b": [("ok", 2)]}, whole=[down])
    assert _run(batches, ["a", "b"]) == ({"a": 1, "b": 2}, [1.0])
    with pytest.raises(TransientError, match=r"\(2 of 2 calls\)"):
        _run(FakeBatches({"a": [], "b": []}, whole=[down] * 5), ["a", "b"], answered_before=True)


def test_a_part_answered_401_is_resent_at_once_with_a_fresh_token() -> None:
    batches = FakeBatches({"a": [("refresh", None), ("ok", 1)], "b": [("ok", 2)]})
    assert _run(batches, ["a", "b"]) == ({"a": 1, "b": 2}, [])


# ---------------------------------------------------------------------------- msal's HTTP client


class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.seen.append((str(method), str(url), kwargs))
        response = requests.Response()
        response.status_code = 200
        return response


@pytest.mark.parametrize(("verify", "sent"), [("/etc/ca.pem", "/etc/ca.pem"), (None, "unset")])
def test_msal_http_passes_the_ca_and_timeout_on_every_request(verify: str | None, sent: str) -> None:
    session = RecordingSession()
    http = MsalHttp(session, verify, 7.0)
    http.get("https://login.example/openid-configuration")
    http.post("https://login.example/token", data={"grant_type": "refresh_token"}, timeout=3.0)
    assert [(m, kw.get("verify", "unset"), kw["timeout"]) for m, _, kw in session.seen] == [
        ("GET", sent, 7.0),
        ("POST", sent, 3.0),
    ]
