"""MIME parsing and composing: tables of cases plus the public corpus."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path

import pytest

from postroom.compose import compose_message, make_message_id
from postroom.mime import (
    Address,
    MalformedMessage,
    ParsedHeaders,
    decode_bytes,
    decode_encoded_words,
    normalise_msgid,
    parse_headers,
    parse_message,
    synthetic_message_id,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file())
# Not messages at all: a bare digest body with no header line, and an Outlook
# .msg (OLE compound file) that someone saved as mail.
NOT_MESSAGES = {"msg_19.txt", "mail_outlook_1"}


def hdr(text: str) -> ParsedHeaders:
    return parse_headers(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n")


# --------------------------------------------------------------------------- parse_headers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<abc@example.com>", "<abc@example.com>"),
        ("  <abc@example.com>  (added by relay)", "<abc@example.com>"),
        ("<Abc.DEF@Example.COM>", "<Abc.DEF@Example.COM>"),  # case kept exactly
        ("foo@bar", "<foo@bar>"),  # garbage without brackets
        ("<abc@\n example.com>", "<abc@example.com>"),  # folded inside the id
        ("<a05001902b7f1c33773e9@[134.84.183.138]>", "<a05001902b7f1c33773e9@[134.84.183.138]>"),
        ("<xxxx>", "<xxxx>"),
        ("<>", None),
        ("", None),
    ],
)
def test_message_id_normalisation(raw, expected):
    assert normalise_msgid(raw) == expected


@pytest.mark.parametrize(
    ("headers", "field", "expected"),
    [
        # References: in order, deduplicated, own id excluded
        (
            "Message-ID: <c@x>\nReferences: <a@x> <b@x>\n <a@x> <c@x>",
            "references",
            ("<a@x>", "<b@x>"),
        ),
        # In-Reply-To with the usual mailer comment after the id
        ("In-Reply-To: <p@x> (Jane's message of Mon, 1 Jan)", "in_reply_to", ("<p@x>",)),
        ("In-Reply-To: <p@x> <q@x>", "in_reply_to", ("<p@x>", "<q@x>")),
        ("References:", "references", ()),
        # Subject: unfolded, whitespace collapsed
        ("Subject: Your\n   application\t  for  X", "subject", "Your application for X"),
        ("Subject: =?utf-8?q?Caf=C3=A9?= au lait", "subject", "Café au lait"),
        # two encoded-words separated by folding whitespace join without a space
        ("Subject: =?utf-8?B?w6k=?=\n =?utf-8?B?w6k=?=", "subject", "éé"),
        # a UTF-8 character split across two B-encoded words
        ("Subject: =?utf-8?B?w6Jo?= =?utf-8?B?w6k=?=", "subject", "âhé"),
        ("Subject: 50% =?garbage", "subject", "50% =?garbage"),
        # repeated address headers all count
        ("To: a@x.com\nCc: b@x.com\nCC: c@x.com\ncc: d@x.com", "cc", tuple(Address("", f"{c}@x.com") for c in "bcd")),
        ("From: Jane Doe <jane@x.com>", "from_", (Address("Jane Doe", "jane@x.com"),)),
        ('From: "Doe, Jane" <jane@x.com>', "from_", (Address("Doe, Jane", "jane@x.com"),)),
        ('From: "Anabel Gonzalo"<anabel@x.com>', "from_", (Address("Anabel Gonzalo", "anabel@x.com"),)),
        ("From: jane@x.com (Jane Doe)", "from_", (Address("Jane Doe", "jane@x.com"),)),
        ("From: =?utf-8?q?J=C3=BCrgen?= <j@x.de>", "from_", (Address("Jürgen", "j@x.de"),)),
        # what the user sees as the sender is the bracketed address
        ("From: alice@example.com <bob@example.com>", "from_", (Address("alice@example.com", "bob@example.com"),)),
        ("To: undisclosed-recipients:;", "to", ()),
        ("From: MAILER DAEMON <>", "from_", ()),
        (
            'To: "A, B" <ab@x.com>, c@x.com,\n\td <d@x.com>',
            "to",
            (Address("A, B", "ab@x.com"), Address("", "c@x.com"), Address("d", "d@x.com")),
        ),
        ("To: Team: a@x.com, b@x.com;", "to", (Address("", "a@x.com"), Address("", "b@x.com"))),
        # the header name is matched case-insensitively, with space before the colon
        ("SUBJECT : shouting", "subject", "shouting"),
        ("X-Subject: nope\nSubject: yes", "subject", "yes"),
        ("Subject: first\nSubject: second", "subject", "first"),
    ],
)
def test_parse_headers_fields(headers, field, expected):
    assert getattr(hdr(headers), field) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 12 Mar 2024 10:15:00 +0100", datetime(2024, 3, 12, 9, 15, tzinfo=UTC)),
        ("12 Mar 2024 10:15 -0500", datetime(2024, 3, 12, 15, 15, tzinfo=UTC)),
        ("Sun, 23 Sep 2001 20:14:35 -0700 (PDT)", datetime(2001, 9, 24, 3, 14, 35, tzinfo=UTC)),
        ("Fri, 6 Apr 2001 09:23:06 -0800 (GMT-0800)", datetime(2001, 4, 6, 17, 23, 6, tzinfo=UTC)),
        ("Mon, 1 Jan 2024 00:00:00 -0000", datetime(2024, 1, 1, tzinfo=UTC)),  # naive -> UTC
        ("Mon, 1 Jan 2024 00:00:00 GMT", datetime(2024, 1, 1, tzinfo=UTC)),
        ("01 Jan 2001 00:01+0000", datetime(2001, 1, 1, 0, 1, tzinfo=UTC)),
        ("Thu, 31 Feb 2024 10:00:00 +0000", None),  # no such day
        ("yesterday-ish", None),
        ("", None),
    ],
)
def test_dates_are_aware_utc_or_none(value, expected):
    h = hdr(f"Date: {value}")
    assert h.date == expected
    assert (expected is None) == ("unparseable Date" in h.defects)


def test_defects_describe_missing_fields():
    h = parse_headers(b"Subject: hi\r\n\r\n")
    assert {"no Message-ID", "no Date", "no From"} <= set(h.defects)
    assert "Message-ID without angle brackets" in hdr("Message-ID: foo@bar").defects


@pytest.mark.parametrize(
    ("raw", "subject", "name"),
    [
        (b"Subject: caf\xc3\xa9\r\nFrom: J\xc3\xbcrgen <j@x.de>\r\n\r\n", "café", "Jürgen"),  # raw UTF-8
        (b"Subject: caf\xe9\r\nFrom: J\xfcrgen <j@x.de>\r\n\r\n", "café", "Jürgen"),  # raw latin-1
        (b"Subject: \x93quoted\x94\r\nFrom: j@x.de\r\n\r\n", "“quoted”", ""),  # raw cp1252
    ],
)
def test_raw_8bit_headers(raw, subject, name):
    h = parse_headers(raw)
    assert h.subject == subject
    assert h.from_[0].name == name


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("=?x-unknown?Q?caf=C3=A9?=", "café"),  # unknown charset, UTF-8 bytes
        ("=?x-unknown?Q?caf=E9?=", "café"),  # unknown charset, latin-1 bytes
        ("=?utf-8?B?" + base64.b64encode(b"caf\xe9").decode() + "?=", "café"),  # mislabelled utf-8
        ("=?iso-8859-1?Q?=93quoted=94?=", "“quoted”"),  # cp1252 bytes labelled latin-1
        ("=?us-ascii?Q?caf=C3=A9?=", "café"),  # 8-bit data labelled us-ascii
        ("=?gb2312?B?tPq/qrj3tdjU9ta1y7C3osax?=", "代开各地增值税发票"),
        ("=?utf-8*en?Q?hello?=", "hello"),  # RFC 2231 language tag
        ("=?utf-8?B?w6k?=", "é"),  # missing base64 padding
        ("=?utf-8?B?###?=", ""),  # broken base64 never raises
    ],
)
def test_encoded_words_never_raise(word, expected):
    assert decode_encoded_words(word) == expected


@pytest.mark.parametrize(
    ("data", "charset", "text", "fallback"),
    [
        (b"plain", None, "plain", False),
        ("naïve".encode(), None, "naïve", False),  # unlabelled UTF-8 is normal
        ("naïve".encode(), "us-ascii", "naïve", True),  # mislabelled
        ("naïve".encode("cp1252"), "us-ascii", "naïve", True),
        ("€".encode("cp1252"), "iso-8859-1", "€", False),  # WHATWG superset
        ("€".encode(), "x-made-up", "€", True),
        ("Привет".encode("koi8-r"), "koi8-r", "Привет", False),
        (("Привет, мир! " * 5).encode() + b"\xd1", "utf-8", ("Привет, мир! " * 5) + "\ufffd", True),
    ],
)
def test_decode_bytes_fallbacks(data, charset, text, fallback):
    assert decode_bytes(data, charset) == (text, fallback)


def test_full_message_input_stops_at_blank_line():
    h = parse_headers(b"Subject: real\r\n\r\nSubject: body text, not a header\r\n")
    assert h.subject == "real"


def test_synthetic_message_id_is_stable_across_mailboxes():
    a = hdr("From: a@x.com\nTo: b@x.com\nSubject: hi\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nBcc: me@x.com")
    b = hdr("Date: Mon, 1 Jan 2024 01:00:00 +0100\nSubject:   hi\nTo: B <b@x.com>\nFrom: A <a@x.com>")
    c = hdr("From: a@x.com\nTo: b@x.com\nSubject: hi again\nDate: Mon, 1 Jan 2024 00:00:00 +0000")
    assert synthetic_message_id(a) == synthetic_message_id(b) != synthetic_message_id(c)
    assert synthetic_message_id(a).endswith("@postroom.invalid>")


# --------------------------------------------------------------------------- parse_message


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n\r\n", b"\x00\x01\x02binary\xff\xfe", b"just some text\nwithout headers\n"],
)
def test_not_a_message_raises_malformed(raw):
    with pytest.raises(MalformedMessage):
        parse_message(raw)


def test_html_only_message_gets_text_body():
    raw = (
        b"From: a@x.com\r\nSubject: hi\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>p{color:red}</style></head><body><p>Hello&nbsp;<b>Bob</b></p>"
        b"<p>Caf&eacute;</p><script>alert(1)</script></body></html>"
    )
    m = parse_message(raw)
    assert m.text_body == "Hello Bob\n\nCafé"
    assert m.html_body is not None and "<b>Bob</b>" in m.html_body


def test_body_charset_fallbacks():
    raw = b"From: a@x.com\r\nContent-Type: text/plain; charset=x-bogus\r\n\r\nSch\xf6ne Gr\xfc\xdfe\r\n"
    m = parse_message(raw)
    assert m.text_body == "Schöne Grüße\r\n"
    assert any("fallback" in d for d in m.defects)


def test_attachments_are_listed_with_decoded_size_and_name():
    raw = (
        b"From: a@x.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nSee CV.\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''Lebenslauf%20J%C3%BCrgen.pdf\r\n\r\n"
        + base64.b64encode(b"%PDF-1.4 fake")
        + b"\r\n--B--\r\n"
    )
    m = parse_message(raw)
    assert m.text_body.strip() == "See CV."
    assert m.attachments == (("Lebenslauf Jürgen.pdf", "application/pdf", 13),)


# --------------------------------------------------------------------------- corpus


def _corpus_id(path: Path) -> str:
    return path.name


@pytest.mark.parametrize("path", CORPUS_FILES, ids=_corpus_id)
def test_every_corpus_message_parses(path):
    raw = path.read_bytes()
    if path.name == "SOURCES.md":
        pytest.skip("licence notes")
    if path.name in NOT_MESSAGES:
        with pytest.raises(MalformedMessage):
            parse_message(raw)
        return
    m = parse_message(raw)
    assert isinstance(m.text_body, str)
    assert m.headers == parse_headers(raw)


# Expected values written by reading the files (encoded-words decoded by hand
# or with base64/iconv), not by running the parser.
KNOWN = {
    "msg_01.txt": dict(
        message_id="<15090.61304.110929.45684@aaa.zzz.org>",
        subject="This is a test message",
        from_=(Address("John X. Doe", "bbb@ddd.com"),),
        date=datetime(2001, 5, 4, 18, 5, 44, tzinfo=UTC),
        text="Do you like this message?",
    ),
    "msg_16.txt": dict(
        message_id="<0GK500B04D0B8X@cougar.noc.ucla.edu>",  # header spelled "Message-id"
        subject="Delivery Notification: Delivery has failed",
        from_=(Address("Internet Mail Delivery", "postmaster@ucla.edu"),),
        text="This report relates to a message you sent",
    ),
    "msg_20.txt": dict(cc=(Address("", "ccc@zzz.org"), Address("", "ddd@zzz.org"), Address("", "eee@zzz.org"))),
    "msg_27.txt": dict(
        subject="bug demonstration 1234567891123456789212345678931234567894123456789512345678961234567897"
        "1234567898112345678911234567892123456789112345678911234567892123456789 more text",
        to=(Address("Barney P. Erson", "bperson@dom.ain"),),
    ),
    "msg_46.txt": dict(  # forwarded as a top-level message/rfc822: outer headers, inner text
        message_id=None,
        subject="GroupwiseForwardingTest",
        from_=(Address("Sender", "sender@example.net"),),
        text="Testing email forwarding with Groupwise 1.2.2010",
    ),
    "msg_15.txt": dict(message_id="<xxxx>", subject="XX", date=None, text="Some removed test."),
    "mail_test_1": dict(
        subject="письмо уведом-е",
        from_=(Address("служба ФНС Даниил Суворов", "suvorov.s@nalg.ru"),),
        attachment=("ФНС_РФ558.zip", "application/octet-stream"),  # raw UTF-8 filename
    ),
    "mail_test_3": dict(
        message_id="<8AF5A2192C2A46BE.2743cdb5-7033-d969-fce8-c552542a49a3@mail.outlook.com>",
        from_=(Address("Ava Oneil", "Oneil.844@randtelekom.com.tr"),),
        text="I am sending you the bills of the goods we delivered to you in the attachment",
        attachment=("message.txt", "text/plain"),
    ),
    "mail_test_5": dict(
        message_id="<aidmakfaofhmuoiauhu.afdakighau@unkown>",
        subject="Je prépare mon été zéro complexe !",
        from_=(Address("Marina de Carlance", "contact@carlance.fr"),),
    ),
    "mail_test_6": dict(subject="Быстрее вкладывайте в золото!"),
    "mail_test_7": dict(
        subject="I: Ordine",
        in_reply_to=("<EEDDF5F5-2786-4B3F-B15A-124A9A29A8D3@agade.info>",),
    ),
    "mail_test_9": dict(  # a GB2312 character split across two B-encoded words
        subject="我把镜头拉近些，你们看看这个是什么屄，这种场合自然少不了内射",
        message_id="<5AF385F77A53C2509D46E44914A76433@ljhw>",
    ),
    "mail_test_12": dict(  # GB2312 headers; body labelled GB2312 but really UTF-8
        subject="代开各地增值税发票",
        from_=(Address("张先生", "baoguan@hotmail.com"),),
        text="你好！我公司可代开各类增值税发票，17%专用发票",
    ),
    "mail_test_15": dict(
        from_=(Address("purchasing@aquillaindustries.com", "do-not-reply@ncs.gov.ng"),),
        to=(),  # "Undisclosed-Recipients:;"
    ),
    "mail_test_18": dict(
        from_=(Address("LastßlName, FirstName", "comma.name@example.com"),),
        to=(Address("tony.stark@example.com", "tony.stark@example.com"),),
        cc=(Address("", "simple@example.net"), Address('John "Johnny" Doe', "john.doe@example.com")),
    ),
    "mail_test_19": dict(
        from_=(Address("alice@example.com", "bob@example.com"),),
        reply_to=(Address("henry@example.com", "ivan@example.com"),),
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_corpus_messages(name):
    expected = dict(KNOWN[name])
    path = next(p for p in CORPUS_FILES if p.name == name)
    m = parse_message(path.read_bytes())
    text = expected.pop("text", None)
    attachment = expected.pop("attachment", None)
    for field, value in expected.items():
        assert getattr(m.headers, field) == value, field
    if text is not None:
        assert text in " ".join(m.text_body.split())
    if attachment is not None:
        assert attachment in [a[:2] for a in m.attachments]


# Files where stdlib's From parse is wrong and ours is deliberate: an unquoted
# display name containing "@" makes stdlib pick the display name (or both).
STDLIB_FROM_WRONG = {"mail_test_15", "mail_test_19"}


def _stdlib_text(value) -> str | None:
    try:
        return " ".join(str(make_header(decode_header(str(value)))).split())
    except (LookupError, UnicodeError):
        return None  # stdlib gives up (e.g. a GB2312 character split across two words)


@pytest.mark.parametrize(
    "path", [p for p in CORPUS_FILES if p.name not in NOT_MESSAGES | {"SOURCES.md"}], ids=_corpus_id
)
def test_agrees_with_stdlib(path):
    raw = path.read_bytes()
    ours = parse_headers(raw)
    theirs = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    stdlib_id = theirs.get("message-id")
    assert ours.message_id == (normalise_msgid(str(stdlib_id)) if stdlib_id else None)
    stdlib_subject = _stdlib_text(theirs["subject"]) if "subject" in theirs else ""
    if stdlib_subject is not None and "\ufffd" not in str(theirs["subject"]):
        assert ours.subject == stdlib_subject
    if path.name not in STDLIB_FROM_WRONG:
        stdlib_from = [e for _, e in getaddresses(theirs.get_all("from", [])) if e]
        assert [a.email for a in ours.from_] == stdlib_from


# --------------------------------------------------------------------------- compose


@pytest.mark.parametrize(
    ("subject", "text", "cte"),
    [
        ("Interview", "Hi Bob,\nsee you at 10.\n", b"7bit"),
        ("Entretien à 10 h — café ☕", "Très bien, à demain.\n" * 3, b"quoted-printable"),
        ("Long", "x" * 300, b"quoted-printable"),  # a line too long for 7bit
        ("Привет", "Здравствуйте! " * 40, b"base64"),
    ],
)
def test_compose_round_trips(subject, text, cte):
    msg_id, raw = compose_message(
        sender=Address("Jane Recruiter", "jane@acme.example"),
        to=["bob@example.com", "Ann <ann@example.com>"],
        subject=subject,
        text=text,
        in_reply_to="<parent@mail.example.com>",
        date=datetime(2024, 3, 12, 9, 15, tzinfo=UTC),
        domain="acme.example",
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.isascii()  # 8-bit content is always transfer-encoded
    assert b"Content-Transfer-Encoding: " + cte + b"\r\n" in raw
    m = parse_message(raw)
    h = m.headers
    assert h.message_id == msg_id and msg_id.endswith("@acme.example>")
    assert h.subject == subject
    assert h.from_ == (Address("Jane Recruiter", "jane@acme.example"),)
    assert [a.email for a in h.to] == ["bob@example.com", "ann@example.com"]
    assert h.in_reply_to == h.references == ("<parent@mail.example.com>",)
    assert h.date == datetime(2024, 3, 12, 9, 15, tzinfo=UTC)
    assert m.text_body.replace("\r\n", "\n").rstrip("\n") == text.rstrip("\n")


def test_compose_keeps_long_references_intact():
    refs = tuple(f"<{'r' * 60}{i}@mail.example.com>" for i in range(12))
    msg_id, raw = compose_message(
        sender="jane@acme.example",
        to=["bob@example.com"],
        subject="Re: x",
        text="ok",
        message_id="<fixed-id@acme.example>",
        in_reply_to=refs[-1],
        references=refs,
        domain="acme.example",
    )
    h = parse_headers(raw)
    assert msg_id == h.message_id == "<fixed-id@acme.example>"
    assert h.references == refs
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_make_message_id_is_unique():
    ids = {make_message_id("acme.example") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("<") and i.endswith("@acme.example>") for i in ids)


# --------------------------------------------------------------------------- hostile headers


@pytest.mark.parametrize(
    ("headers", "field", "expected"),
    [
        # encoded-words that decode to text no database stores: lone surrogates, NUL, controls
        ("Subject: =?utf-7?q?+2AA-?=", "subject", "\ufffd"),
        ("Subject: =?utf-8?q?a=00b?=", "subject", "ab"),
        ("Subject: =?utf-8?q?bell=07tab=09esc=1B?=", "subject", "belltab esc"),
        ("From: =?utf-7?q?+2AA-?= <a@x.test>", "from_", (Address("\ufffd", "a@x.test"),)),
        ("From: =?utf-8?q?x=00y?= <a@x.test>", "from_", (Address("xy", "a@x.test"),)),
        # an address longer than any mailbox is dropped; a long name is cut
        ("To: <" + "a" * 400 + "@x.test>, b@x.test", "to", (Address("", "b@x.test"),)),
        ('From: "' + "N" * 300 + '" <a@x.test>', "from_", (Address("N" * 200, "a@x.test"),)),
        ("Subject: " + "S" * 5000, "subject", "S" * 1000),
        # dates no calendar type holds, or none a mailer writes
        ("Date: Mon, 01 Jan 0001 00:30:00 +0000", "date", None),
        ("Date: Fri, 31 Dec 99999 23:59:59 -1200", "date", None),
        ("Date: Fri, 31 Dec 9999 23:59:59 -1200", "date", None),
        ("Date: Sat, 01 Jan 1800 00:00:00 +0000", "date", None),
    ],
)
def test_hostile_header_values_are_cleaned_where_they_are_parsed(headers, field, expected):
    assert getattr(hdr(headers), field) == expected


def test_raw_nul_and_invalid_utf8_never_reach_the_values():
    h = parse_headers(b"Subject: hello\x00world\r\nFrom: \xff\xfe <ann@x.test>\r\nTo: rita\x00@x.test\r\n\r\n")
    assert h.subject == "helloworld"
    assert h.to == (Address("", "rita@x.test"),)
    assert all("\x00" not in a.name + a.email for a in h.participants())
    assert "8-bit header bytes not UTF-8, read as cp1252" in h.defects


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@x.test>\r\nBcc: victim@example.org", ("<a@x.test>",)),  # the rest is not an id
        ("<a b c@x.test>", ("<abc@x.test>",)),  # folded: unfolded
        ("<\x01\x02@x> <ok@x.test>", ("<ok@x.test>",)),  # control characters: dropped
        ("<caf\u00e9@x.test> <ok@x.test>", ("<ok@x.test>",)),  # not printable ASCII: dropped
        ("<> <@> foo", ("<@>",)),
    ],
)
def test_only_printable_ascii_message_ids_are_kept(value, expected):
    assert hdr(f"Message-ID: <own@x.test>\nReferences: {value}").references == expected


def test_an_over_long_id_is_hashed_the_same_way_wherever_it_appears():
    long_id = "<" + "a" * 2000 + "@x.test>"
    original = hdr(f"Message-ID: {long_id}")
    reply = hdr(f"Message-ID: <r@x.test>\nIn-Reply-To: {long_id}\nReferences: <root@x.test> {long_id}")
    assert original.message_id is not None and len(original.message_id) < 100
    assert reply.in_reply_to == (original.message_id,) and reply.references[-1] == original.message_id
    assert hdr(f"Message-ID: {long_id[:-1]}b>").message_id != original.message_id


def test_references_are_bounded_to_the_root_and_the_nearest():
    refs = " ".join(f"<r{i}@x.test>" for i in range(10_000))
    h = hdr(f"Message-ID: <own@x.test>\nReferences: {refs}")
    assert h.references == ("<r0@x.test>", *(f"<r{i}@x.test>" for i in range(9951, 10_000)))
    assert "9950 of 10000 References dropped" in h.defects


def test_address_lists_are_bounded():
    h = hdr("To: " + ", ".join(f"r{i}@x.test" for i in range(10_000)))
    assert len(h.to) == 1000 and h.to[0] == Address("", "r0@x.test")
    assert "9000 of 10000 to addresses dropped" in h.defects


def test_fingerprint_tells_reused_ids_apart_and_copies_together():
    from postroom.mime import fingerprint

    when = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    same = fingerprint("ann@x.test", when, "Hello  there")
    assert same == fingerprint("ANN@x.test", when.astimezone(), "hello there")  # one message, two copies
    assert same != fingerprint("mallory@x.test", when, "Hello there")
    assert same != fingerprint("ann@x.test", when.replace(second=1), "Hello there")
