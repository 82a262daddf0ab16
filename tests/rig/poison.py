"""Hostile and odd messages, byte for byte, for the "no email can stop a mailbox" tests.

Anyone can email a recruiter, so each of these arrives in a real mailbox sooner or
later. They are built as raw bytes (never through ``email.message``, which would
clean them up) and each carries a Message-ID of its own where it has one, so a
test can tell which of them was indexed and which was quarantined.

    for case in poison_cases():
        mailbox.append(case.raw)   # or seed the Maildir directly
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Poison:
    name: str
    raw: bytes
    message_id: str | None  # the id as written, when there is one to look for


def _msg(headers: list[bytes], body: bytes = b"Hello.\r\n") -> bytes:
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def _std(mid: bytes, **over: bytes) -> list[bytes]:
    """A plain header block with one field replaced or added per keyword (name with _ for -)."""
    fields = {
        b"From": b"Ann Applicant <ann@example.org>",
        b"To": b"Rita Recruiter <rita@example.test>",
        b"Subject": b"Hello",
        b"Date": b"Tue, 03 Mar 2026 09:00:00 +0000",
        b"Message-ID": mid,
    }
    for key, value in over.items():
        fields[key.replace("_", "-").encode()] = value
    return [k + b": " + v for k, v in fields.items()]


def poison_cases() -> Iterator[Poison]:
    """Every case once; ids are ``<poison-NAME@x.test>`` unless the id itself is the poison."""

    def case(name: str, **over: bytes) -> Poison:
        mid = f"<poison-{name}@x.test>"
        return Poison(name, _msg(_std(mid.encode(), **over)), mid)

    # RFC 2047 words that decode to text no database stores as it is
    yield case("utf7-lone-surrogate-subject", Subject=b"=?utf-7?q?+2AA-?=")
    yield case("utf7-lone-surrogate-name", From=b"=?utf-7?q?+2AA-?= <ann@example.org>")
    yield case("utf7-surrogate-pair-halves", Subject=b"=?utf-7?q?+2D3cAA-?= =?utf-7?q?+3gA-?=")
    yield case("nul-raw-subject", Subject=b"hello\x00world")
    yield case("nul-encoded-subject", Subject=b"=?utf-8?q?a=00b?=")
    yield case("nul-encoded-name", From=b"=?utf-8?q?x=00y?= <ann@example.org>")
    yield case("nul-in-address", To=b"rita\x00@example.test")
    yield case("control-chars-subject", Subject=b"=?utf-8?q?bell=07tab=09esc=1Bdel=7F?=")
    # ids and addresses that do not fit their columns, or break an index
    long_local = b"a" * 2000
    yield Poison("message-id-2000-chars", _msg(_std(b"<" + long_local + b"@x.test>")), None)
    yield Poison(
        "message-id-4-byte-utf8",
        _msg(_std(b"<" + ("\U0001f600" * 900).encode() + b"@x.test>")),
        None,
    )
    yield case("references-id-2000-chars", References=b"<" + long_local + b"@x.test>")
    yield case("in-reply-to-2000-chars", In_Reply_To=b"<" + long_local + b"@x.test>")
    yield case("address-2000-chars", To=b"<" + long_local + b"@example.test>")
    yield case("from-address-2000-chars", From=b"Long <" + long_local + b"@example.org>")
    yield case("name-1mb", From=b'"' + b"N" * 1_000_000 + b'" <ann@example.org>')
    # sheer size
    yield case("references-10000", References=b"\r\n ".join(b"<ref%d@x.test>" % i for i in range(10_000)))
    yield case("recipients-10000", To=b",\r\n ".join(b"r%d@example.test" % i for i in range(10_000)))
    yield case("subject-1mb", Subject=b"S" * 1_000_000)
    # 8-bit bytes that are not UTF-8, in every header
    bad = b"\xff\xfe\xc3\x28\xa0\xa1"
    yield Poison(
        "invalid-utf8-everywhere",
        _msg(
            [
                b"From: " + bad + b" <ann@example.org>",
                b"To: " + bad + b" <rita@example.test>",
                b"Cc: " + bad + b"@" + bad + b".test",
                b"Subject: " + bad,
                b"Date: " + bad,
                b"Message-ID: <poison-invalid-utf8-everywhere-" + bad + b"@x.test>",
                b"In-Reply-To: <" + bad + b"@x.test>",
                b"References: <" + bad + b"@x.test>",
                b"Reply-To: " + bad,
            ]
        ),
        None,
    )
    # dates no calendar type holds
    yield case("date-year-0", Date=b"Sat, 01 Jan 0000 00:00:00 +0000")
    yield case("date-year-1", Date=b"Mon, 01 Jan 0001 00:30:00 +0000")
    yield case("date-year-1-east", Date=b"Mon, 01 Jan 0001 00:30:00 +0100")
    yield case("date-year-99999", Date=b"Fri, 31 Dec 99999 23:59:59 -1200")
    yield case("date-year-9999-west", Date=b"Fri, 31 Dec 9999 23:59:59 -1200")
    # ids that would become extra header lines when written back into a reply
    yield case("in-reply-to-crlf-injection", In_Reply_To=b"<a@x.test>\r\nBcc: victim@example.org")
    yield case("references-garbage", References=b"<a b c> <@> <> <\x01\x02@x> foo <ok@x.test>")
    # structure
    yield Poison("no-headers-at-all", b"\x00\x01\x02 not a mail message at all \xff\xfe" * 20, None)
    yield Poison("empty-header-block", b"\r\n\r\nbody only\r\n", None)


def normal_messages(n: int, prefix: str = "normal") -> Iterator[tuple[str, bytes]]:
    """``n`` ordinary messages: (Message-ID, raw)."""
    for i in range(n):
        mid = f"<{prefix}-{i}@x.test>"
        yield (
            mid,
            _msg(
                _std(mid.encode(), Subject=b"Normal %d" % i, Date=b"Tue, 03 Mar 2026 10:%02d:00 +0000" % (i % 60)),
                b"Ordinary message %d.\r\n" % i,
            ),
        )
