"""A bounce for a message Postroom sent names the recipients whose address failed, with the
status code, and never the other people the quoted original went to; delays, auto-replies,
read receipts and ordinary mail are not bounces of anyone."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import postroom.bounces
from postroom.bounces import DIAGNOSTIC_LIMIT, Bounce, is_bounce, parse_bounce

DSN = Path(__file__).parent.parent / "data" / "dsn"


def _load(name: str) -> bytes:
    return (DSN / name).read_bytes()


def _bounce(name: str) -> Bounce:
    bounce = parse_bounce(_load(name))
    assert bounce is not None, name
    return bounce


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(postroom.bounces).failed == 0


# name, the original's Message-ID, (address, action, status, permanent) per recipient, reporting MTA
CORPUS = [
    (
        "postfix.eml",
        "<174107955012.4711.interview@postroom.example>",
        [("ghost@example.org", "failed", "5.1.1", True)],
        "mail.postroom.example",
    ),
    (
        "exchange_o365.eml",
        "<174107955013.4712.offer@postroom.example>",
        [("j.smith@contoso.com", "failed", "5.1.10", True)],
        "AM0PR07MB1234.eurprd07.prod.outlook.com",
    ),
    (
        "gmail.eml",
        "<174107955014.4713.welcome@postroom.example>",
        [("no.such.candidate.4471@gmail.com", "failed", "5.1.1", True)],
        "googlemail.com",
    ),
    (
        "exim_text.eml",
        "<174108001011.4714.next@postroom.example>",
        [("nobody@example.net", "failed", "5.1.1", True)],
        None,
    ),
    (
        "qmail.eml",
        "<174116604100.4717.refcheck@postroom.example>",
        [("gone@example.com", "failed", "5.1.1", True)],
        None,
    ),
    (
        "delayed.eml",
        "<174107955015.4715.slots@postroom.example>",
        [("anna.kowalska@fabrikam.example", "delayed", "4.4.7", False)],
        "DB9PR02MB7001.eurprd02.prod.outlook.com",
    ),
    (
        "cc_quoted.eml",
        "<174115805900.4716.shortlist@postroom.example>",
        [("old.address@partner.example", "failed", "5.1.1", True)],
        "mail.postroom.example",
    ),
]


@pytest.mark.parametrize(("name", "message_id", "expected", "mta"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_real_format_yields_exactly_its_failed_recipients(
    name: str, message_id: str, expected: list[tuple[str, str, str, bool]], mta: str | None
) -> None:
    raw = _load(name)
    assert is_bounce(raw)
    bounce = _bounce(name)
    assert [(r.address, r.action, r.status, r.permanent) for r in bounce.recipients] == expected
    assert bounce.original_message_id == message_id
    assert bounce.reporting_mta == mta


@pytest.mark.parametrize("name", ["autoreply.eml", "normal.eml", "read_receipt.eml"])
def test_auto_replies_read_receipts_and_ordinary_mail_are_not_bounces(name: str) -> None:
    # Each of these mentions a failed delivery or an address in its text, and two come with an
    # empty Return-Path, as RFC 3834 asks of auto-replies.
    raw = _load(name)
    assert not is_bounce(raw)
    assert parse_bounce(raw) is None


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        (
            "cc_quoted.eml",
            [
                "ana.lima@partner.example",
                "bruno.costa@partner.example",
                "hr-head@partner.example",
                "interviews@postroom.example",
                "carla@partner.example",
                "dario@partner.example",
            ],
        ),
        (
            "exim_text.eml",
            ["someone.else@example.net", "colleague@example.net", "assistant@example.net", "partner@example.net"],
        ),
        ("qmail.eml", ["still.here@example.com", "boss@example.com", "former.manager@example.com"]),
        ("gmail.eml", ["recruiter@postroom.example", "lead@partner.example"]),
        ("exchange_o365.eml", ["lena.berg@contoso.com", "payroll@contoso.com"]),
    ],
)
def test_people_in_the_quoted_original_are_never_reported(name: str, quoted: list[str]) -> None:
    raw = _load(name)
    for address in quoted:
        assert address.encode() in raw  # the corpus really does name them
    reported = {r.address for r in _bounce(name).recipients}
    assert reported.isdisjoint(quoted)
    assert "jobs@postroom.example" not in reported


def test_non_standard_bounces_drop_addresses_a_detector_finds_only_in_the_quote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # flufl.bounce's looser detectors can pick addresses out of a quoted copy; simulate one
    # that does, and check the notice-text guard drops all but the one the notice names.
    found = frozenset({b"nobody@example.net", b"colleague@example.net", b"someone.else@example.net"})
    monkeypatch.setattr(postroom.bounces, "all_failures", lambda msg: (frozenset({b"partner@example.net"}), found))
    bounce = _bounce("exim_text.eml")
    assert [r.address for r in bounce.recipients] == ["nobody@example.net"]


def test_the_structured_part_wins_over_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(msg: object) -> object:
        raise AssertionError("flufl.bounce consulted although a delivery-status part is there")

    monkeypatch.setattr(postroom.bounces, "all_failures", boom)
    assert [r.address for r in _bounce("postfix.eml").failed] == ["ghost@example.org"]


def test_diagnostics_are_one_line_and_keep_the_servers_words() -> None:
    assert _bounce("exchange_o365.eml").recipients[0].diagnostic == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient j.smith@contoso.com not found by SMTP address lookup"
    )
    gmail = _bounce("gmail.eml").recipients[0].diagnostic
    assert gmail.startswith("550 5.1.1 The email account that you tried to reach does not exist. Please try double")
    assert "550-5.1.1" not in gmail and "\n" not in gmail
    exim = _bounce("exim_text.eml").recipients[0].diagnostic
    assert "550 5.1.1 <nobody@example.net>: Recipient address rejected" in exim


def _dsn(blocks: str, *, ctype: str = "multipart/report; report-type=delivery-status", extra: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: jobs@postroom.example\r\nSubject: DSN\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: {ctype}; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n"
        f"--b\r\nContent-Type: message/delivery-status\r\n{extra}\r\n{blocks}\r\n--b--\r\n"
    ).encode()


def test_several_recipients_each_with_their_own_outcome() -> None:
    raw = _dsn(
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n"
        "Final-Recipient: rfc822; b@example.org\r\nAction: relayed\r\nStatus: 2.0.0\r\n\r\n"
        "Final-Recipient: rfc822; c@example.org\r\nAction: failed\r\nStatus: 4.4.7\r\n\r\n"
        "Original-Recipient: rfc822; Alias@Example.org\r\nFinal-Recipient: rfc822; mailbox-17@internal.example.org\r\n"
        "Action: Failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
    )
    bounce = parse_bounce(raw)
    assert bounce is not None
    assert [(r.address, r.action, r.status, r.permanent) for r in bounce.recipients] == [
        ("a@example.org", "failed", "5.2.2", True),
        ("b@example.org", "relayed", "2.0.0", False),
        ("c@example.org", "failed", "4.4.7", False),  # expired in a queue: not the address's fault
        ("alias@example.org", "failed", "5.1.1", True),  # the address Postroom sent to; the precise code
    ]
    assert [r.address for r in bounce.failed] == ["a@example.org", "alias@example.org"]


def test_a_base64_delivery_status_part_is_decoded() -> None:
    import base64

    body = base64.b64encode(
        b"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822;x@example.org\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
    ).decode()
    bounce = parse_bounce(_dsn(body, extra="Content-Transfer-Encoding: base64\r\n"))
    assert bounce is not None
    assert [r.address for r in bounce.failed] == ["x@example.org"]


def test_a_diagnostic_is_bounded() -> None:
    raw = _dsn(
        "Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\n"
        f"Status: 5.7.1\r\nDiagnostic-Code: smtp; 550 5.7.1 {'blocked ' * 2000}\r\n"
    )
    bounce = parse_bounce(raw)
    assert bounce is not None
    assert len(bounce.recipients[0].diagnostic) <= DIAGNOSTIC_LIMIT


def test_non_internet_and_malformed_recipients_are_skipped() -> None:
    raw = _dsn(
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: x400; /G=Ana/S=Lima/O=Partner/\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "Final-Recipient: rfc822; not an address\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    )
    bounce = parse_bounce(raw)
    assert bounce is not None and bounce.recipients == ()


def test_a_bounce_without_recipients_is_still_a_bounce() -> None:
    raw = b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nReturn-Path: <>\r\nSubject: x\r\n\r\nOops.\r\n"
    assert is_bounce(raw)
    assert parse_bounce(raw) == Bounce(None, (), None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"From: postmaster@example.org\r\nReturn-Path: <>\r\n\r\nx\r\n", True),
        (b"From: MAILER-DAEMON@example.org\r\n\r\nx\r\n", True),
        (b"From: ana@example.org\r\nX-Failed-Recipients: b@example.org\r\n\r\nx\r\n", True),
        (b"From: postmaster@example.org\r\nReturn-Path: <postmaster@example.org>\r\n\r\nhello\r\n", False),
        (b"From: ana@example.org\r\nReturn-Path: <>\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n", False),
    ],
)
def test_is_bounce_heuristics_for_non_mime_notices(raw: bytes, expected: bool) -> None:
    assert is_bounce(raw) is expected
