"""Table tests for the IMAP response parser (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from providers import imap_protocol as p
from providers.base import FolderRole
from providers.imap import message_from_fetch


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            [b"1 (UID 7 FLAGS (\\Seen \\Flagged) MODSEQ (42))"],
            [{"UID": 7, "FLAGS": ("\\Seen", "\\Flagged"), "MODSEQ": 42}],
        ),
        ([b"3 (FLAGS () UID 9 RFC822.SIZE 1234)"], [{"FLAGS": (), "UID": 9, "RFC822.SIZE": 1234}]),
        (
            [(b"1 (UID 5 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] {14}", b"Subject: a)\r\n\r\n"), b")"],
            [{"UID": 5, "BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)]": b"Subject: a)\r\n\r\n"}],
        ),
        (
            [(b"1 (UID 5 BODY[] {3}", b'a"('), b" FLAGS (\\Seen))", (b"2 (UID 6 BODY[] {2}", b"xy"), b")"],
            [{"UID": 5, "BODY[]": b'a"(', "FLAGS": ("\\Seen",)}, {"UID": 6, "BODY[]": b"xy"}],
        ),
        (
            [b'4 (UID 1 INTERNALDATE " 7-Jul-2024 02:44:25 -0700")'],
            [{"UID": 1, "INTERNALDATE": " 7-Jul-2024 02:44:25 -0700"}],
        ),
        ([b"5 (UID 2 BODY[] NIL)"], [{"UID": 2, "BODY[]": None}]),
        ([b'6 (UID 3 BODY[]<0> "short")'], [{"UID": 3, "BODY[]": b"short"}]),
    ],
)
def test_parse_fetch(data: list, expected: list) -> None:
    assert p.parse_fetch(data) == expected


GMAIL = [
    (
        b'1 (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334866 X-GM-LABELS (\\Inbox \\Sent "My Label" '
        b'"quote \\" in") UID 44 FLAGS (\\Seen) RFC822.SIZE 10 INTERNALDATE "01-Jan-2024 10:00:00 +0000" '
        b"BODY[HEADER.FIELDS (MESSAGE-ID)] {19}",
        b"Message-ID: <a@b>\r\n",
    ),
    b")",
]


def test_gmail_items_become_thread_hint_and_labels() -> None:
    (item,) = p.parse_fetch(GMAIL)
    msg = message_from_fetch(item, gmail=True)
    assert msg.thread_hint == "1278455344230334865"
    assert msg.provider_message_id == "1278455344230334866"
    assert msg.labels == {"\\Inbox", "\\Sent", "My Label", 'quote " in'}
    assert msg.internal_date == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert msg.headers == b"Message-ID: <a@b>\r\n"
    assert message_from_fetch(item, gmail=False).thread_hint is None


def test_internaldate_offset() -> None:
    assert p.parse_internaldate(" 7-Jul-2024 02:44:25 -0700") == datetime(
        2024, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7))
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("17-Jul-1996 02:44:25 -0700", datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))),
        (
            "17-Jul-1996 02:44:25 +0530",
            datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ("01-Jan-2024 00:00:00 +0000", datetime(2024, 1, 1, tzinfo=UTC)),
        ("31-Dec-2023 23:59:59 -0000", datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (" 7-Jul-2024 02:44:25 +0200", datetime(2024, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=2)))),
        ("7-jul-2024 02:44:25 +0200", datetime(2024, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=2)))),
        ("29-FEB-2024 12:00:00 -1200", datetime(2024, 2, 29, 12, tzinfo=timezone(timedelta(hours=-12)))),
        ("29-Feb-2024 12:00:00 +14:00", datetime(2024, 2, 29, 12, tzinfo=timezone(timedelta(hours=14)))),
        ("05-Mar-2024 1:02:03 Z", datetime(2024, 3, 5, 1, 2, 3, tzinfo=UTC)),
    ],
)
def test_parse_internaldate(text: str, expected: datetime) -> None:
    got = p.parse_internaldate(text)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "17-Jul-1996",
        "17-Jul-1996 02:44:25",  # no zone
        "17-Jly-1996 02:44:25 +0000",  # no such month
        "31-Feb-2024 02:44:25 +0000",  # no such day
        "00-Jan-2024 02:44:25 +0000",
        "17-Jul-96 02:44:25 +0000",
        "17-Jul-1996 24:00:00 +0000",
        "17-Jul-1996 02:44:60 +0000",
        "17-Jul-1996 02:44:25 +2400",  # offset out of range
        "17-Jul-1996 02:44:25 +0760",
        "17-Jul-1996 02:44:25 PDT",
        "17-Jul-1996 02:44:25 +0000 trailing",
        "17/Jul/1996 02:44:25 +0000",
    ],
)
def test_parse_internaldate_rejects_garbage(text: str) -> None:
    with pytest.raises(p.ParseError, match="bad INTERNALDATE"):
        p.parse_internaldate(text)


@pytest.mark.parametrize(
    ("data", "uids"),
    [
        ([b"(EARLIER) 1:3,5"], [1, 2, 3, 5]),
        ([b"41,43:45"], [41, 43, 44, 45]),
        ([b"(EARLIER) 9:7"], [7, 8, 9]),
        ([], []),
    ],
)
def test_parse_vanished(data: list, uids: list) -> None:
    assert p.parse_vanished(data) == uids


@pytest.mark.parametrize(
    ("uids", "text"),
    [([1], "1"), ([1, 2, 3], "1:3"), ([5, 1, 2, 3, 9, 10], "1:3,5,9:10"), (range(1, 501), "1:500")],
)
def test_compress_uids(uids: list, text: str) -> None:
    assert p.compress_uids(uids) == text


def test_uid_chunks_stay_short() -> None:
    scattered = list(range(1, 40000, 2))  # no ranges: worst case for the command length
    chunks = list(p.uid_chunks(scattered, 5000, max_chars=8000))
    assert sum(len(c) for c, _ in chunks) == len(scattered)
    assert all(len(text) <= 8000 for _, text in chunks)


LIST_DATA = [
    b'(\\HasNoChildren \\Sent) "/" "Sent Items"',
    b'(\\Noselect \\HasChildren) "/" "[Gmail]"',
    b'(\\HasNoChildren \\All) "/" "[Gmail]/All Mail"',
    (b'(\\HasNoChildren) "/" {11}', b"Sent & More"),
    b"",
    b'() "." INBOX.Envoy&AOk-s',
    b'(\\HasNoChildren) "." "INBOX.&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"',
    b'(\\NonExistent) "/" Gone',
    b"(\\HasNoChildren) NIL Flat",
]


def test_parse_list() -> None:
    entries = p.parse_list(LIST_DATA)
    names = [e.name for e in entries]
    assert names == [
        "Sent Items", "[Gmail]", "[Gmail]/All Mail", "Sent & More",
        "INBOX.Envoyés", "INBOX.Отправленные", "Gone", "Flat",
    ]  # fmt: skip
    by_name = {e.name: e for e in entries}
    assert not by_name["[Gmail]"].selectable and not by_name["Gone"].selectable
    assert by_name["INBOX.Envoyés"].raw_name == "INBOX.Envoy&AOk-s"
    assert by_name["Flat"].delimiter is None
    assert p.role_from_attributes(by_name["[Gmail]/All Mail"].attributes) == FolderRole.ALL


@pytest.mark.parametrize(
    ("name", "delimiter", "role"),
    [
        ("INBOX", "/", FolderRole.INBOX),
        ("Sent Items", "/", FolderRole.SENT),
        ("Gesendete Elemente", "/", FolderRole.SENT),
        ("INBOX.Gesendet", ".", FolderRole.SENT),
        ("INBOX/Éléments envoyés", "/", FolderRole.SENT),
        ("Posta inviata", "/", FolderRole.SENT),
        ("Wysłane", "/", FolderRole.SENT),
        ("Отправленные", "/", FolderRole.SENT),
        ("已发送", "/", FolderRole.SENT),
        ("Deleted Items", "/", FolderRole.TRASH),
        ("Корзина", "/", FolderRole.TRASH),
        ("INBOX.Papierkorb", ".", FolderRole.TRASH),
        ("Entwürfe", "/", FolderRole.DRAFTS),
        ("Черновики", "/", FolderRole.DRAFTS),
        ("Spam", "/", FolderRole.JUNK),
        ("Archiv", "/", FolderRole.ARCHIVE),
        ("Projects/Sent", "/", None),
        ("Receipts", "/", None),
    ],
)
def test_role_from_name(name: str, delimiter: str, role: FolderRole | None) -> None:
    assert p.role_from_name(name, delimiter) == role


@pytest.mark.parametrize(
    ("decoded", "encoded"),
    [
        ("Envoyés", "Envoy&AOk-s"),
        ("A & B", "A &- B"),
        ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
        ("plain", "plain"),
    ],
)
def test_modified_utf7_round_trip(decoded: str, encoded: str) -> None:
    assert p.encode_mailbox_name(decoded) == encoded
    assert p.decode_mailbox_name(encoded) == decoded


def test_status_and_response_codes() -> None:
    assert p.parse_status([b'"Sent Items" (MESSAGES 3 UIDNEXT 9 HIGHESTMODSEQ 77)']) == {
        "MESSAGES": 3, "UIDNEXT": 9, "HIGHESTMODSEQ": 77
    }  # fmt: skip
    assert p.response_code("[APPENDUID 38505 3955] Append completed.", "APPENDUID") == ["38505", "3955"]
    assert p.response_code("OK done", "APPENDUID") is None


@pytest.mark.parametrize("bad", [[b"1 (UID 7"], [b"1 (UID 7 FLAGS)"], [b"1 (UID x)"]])
def test_malformed_fetch_raises_parse_error(bad: list) -> None:
    with pytest.raises(ValueError):
        p.parse_fetch(bad)


FAST_PATH_CASES = [
    # the shape the sync path reads thousands of times
    [
        (
            b'1 (UID 7 FLAGS (\\Seen $Label) RFC822.SIZE 12 INTERNALDATE "17-Jul-1996 02:44:25 -0700" MODSEQ (42) '
            b"BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] {5}",
            b"Hello",
        ),
        b")",
    ],
    [(b"2 (UID 9 FLAGS () BODY[] {2}", b"Hi"), b")", (b"3 (UID 10 FLAGS (\\Deleted) BODY[] {0}", b""), b")"],
    # shapes only the general parser reads: items after the literal, Gmail labels, no literal at all
    [(b"1 (UID 7 BODY[] {5}", b"Hello"), b" FLAGS (\\Seen))"],
    [(b'1 (X-GM-LABELS ("\\\\Important" "a (b)") UID 3 BODY[] {1}', b"x"), b")"],
    [b"12 (UID 7 FLAGS (\\Seen) MODSEQ (42))"],
]


@pytest.mark.parametrize("data", FAST_PATH_CASES)
def test_fast_fetch_parser_agrees_with_the_general_one(data: list) -> None:  # type: ignore[type-arg]
    from providers.imap_protocol import _parse_fetch_fast, _parse_fetch_general

    fast = _parse_fetch_fast(data)
    assert fast is None or fast == _parse_fetch_general(data)
    assert p.parse_fetch(data) == _parse_fetch_general(data)


def test_fast_fetch_parser_takes_the_common_shape() -> None:
    from providers.imap_protocol import _parse_fetch_fast

    assert _parse_fetch_fast(FAST_PATH_CASES[0]) is not None and _parse_fetch_fast(FAST_PATH_CASES[1]) is not None
    assert _parse_fetch_fast(FAST_PATH_CASES[2]) is None and _parse_fetch_fast(FAST_PATH_CASES[3]) is None
