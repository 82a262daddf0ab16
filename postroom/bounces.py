"""Delivery status notifications (bounces): which recipients of a message Postroom sent did not
get it, and why. Pure functions over the raw bytes; the caller marks recipients ``bounced``.

Policy, in order:

1. **A standard DSN (RFC 3464) is read from its fields.** A ``multipart/report;
   report-type=delivery-status`` carries a ``message/delivery-status`` part: one block of
   per-message fields (``Reporting-MTA``, Gmail's ``X-Original-Message-ID``), then one block per
   recipient (``Original-Recipient``, ``Final-Recipient``, ``Action``, ``Status``,
   ``Diagnostic-Code``). Postfix, Exim 4 (for DSN-aware senders), Exchange/Office 365 and Gmail
   all send this. Only the addresses in those fields are reported: the quoted original (the
   ``message/rfc822`` or ``text/rfc822-headers`` part) names the people the message went *to*,
   not the ones it failed for, and its To/Cc/body never yield a recipient. The recipient's
   address is ``Original-Recipient`` (the address as Postroom sent it) when it is there, else
   ``Final-Recipient`` (which may be an alias the receiving side expanded it to).
2. **A non-standard bounce is read by flufl.bounce** (GNU Mailman's detectors: Exim's plain
   text, qmail, old Exchange, …), then checked: an address it finds counts only if the bounce's
   own notice names it — the text before the quoted copy of the original, or an
   ``X-Failed-Recipients`` header. An address that appears only in the quoted original's
   headers or body is dropped, and so are the bounce's own sender and addressee.
3. **Permanent means the address is bad.** ``permanent`` is true for ``Action: failed`` with a
   5.x.x status (or none): mark the recipient ``bounced``. ``Action: delayed`` (4.x.x, e.g.
   4.4.7 "still trying") is a warning, never a bounce of the recipient; ``failed`` with a 4.x.x
   status (a message that expired in a queue) means this message was not delivered, but says
   nothing against the address. ``delivered``/``relayed``/``expanded`` are success reports.

The original message is identified by the ``Message-ID`` of the quoted original (or its
headers part), else the DSN's ``X-Original-Message-ID``, else the notice's ``In-Reply-To``,
else a ``Message-ID:`` line in a copy quoted inline as text. :func:`is_bounce` tells a DSN
from an auto-reply (RFC 3834) and from ordinary mail; a read receipt (``report-type=
disposition-notification``) is not a bounce.

>>> raw = (b"From: MAILER-DAEMON@mx.example.org\\r\\nTo: jobs@postroom.example\\r\\n"
...        b"Subject: Undelivered Mail Returned to Sender\\r\\nMIME-Version: 1.0\\r\\n"
...        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\\r\\n\\r\\n'
...        b"--b\\r\\nContent-Type: text/plain\\r\\n\\r\\nSorry.\\r\\n"
...        b"--b\\r\\nContent-Type: message/delivery-status\\r\\n\\r\\nReporting-MTA: dns; mx.example.org\\r\\n\\r\\n"
...        b"Final-Recipient: rfc822; Ana@Example.org\\r\\nAction: failed\\r\\nStatus: 5.1.1\\r\\n"
...        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\\r\\n\\r\\n--b--\\r\\n")
>>> bounce = parse_bounce(raw)
>>> [(r.address, r.action, r.status, r.diagnostic, r.permanent) for r in bounce.recipients]
[('ana@example.org', 'failed', '5.1.1', '550 5.1.1 User unknown', True)]
>>> bounce.reporting_mta
'mx.example.org'
>>> parse_bounce(b"From: ana@example.org\\r\\nSubject: hello\\r\\n\\r\\nHi!\\r\\n") is None
True
"""

from __future__ import annotations

import base64
import binascii
import email
import email.parser
import email.policy
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from flufl.bounce import all_failures

from postroom.addresses import normalise_address
from postroom.mime import clean_text, normalise_msgid

__all__ = ["ACTIONS", "Bounce", "BouncedRecipient", "is_bounce", "parse_bounce"]

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
DIAGNOSTIC_LIMIT = 500  # characters of a diagnostic kept: enough for any real SMTP reply
MAX_RECIPIENTS = 1000  # a DSN naming more is hostile or broken; the rest are ignored

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+\.[A-Za-z0-9-]+")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailer_daemon")
# Where mail software starts quoting the original inline, in a text body (Exim, Postfix's
# plain-text fallback, Sendmail, qmail, Exchange 2003, Gmail's old format).
_QUOTE_MARKERS = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*This is a copy of the message"
    r"|-{2,}[ \t]*(?:The )?Original message"
    r"|-{2,}[ \t]*Below this line is a copy of the message"
    r"|-{2,}[ \t]*Returned message"
    r"|-{2,}[ \t]*Undelivered Message Headers"
    r"|Original message headers:"
    r"|-{2,}[ \t]*Enclosed is a copy of the message"
    r"|--- Below this line is a copy of the message)",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class BouncedRecipient:
    """What one DSN says about one recipient.

    ``address`` is lower-cased, without brackets; ``action`` one of :data:`ACTIONS`; ``status``
    the RFC 3463 code (``"5.1.1"``) or None when the notice gives none; ``diagnostic`` the
    remote server's words, one line, at most :data:`DIAGNOSTIC_LIMIT` characters; ``permanent``
    whether the address itself failed (see the module docstring)."""

    address: str
    action: str
    status: str | None
    diagnostic: str
    permanent: bool


@dataclass(frozen=True)
class Bounce:
    """A delivery status notification: the original's ``Message-ID`` (``"<id@host>"``) when the
    notice says which message it is about, the recipients it reports on, and the MTA that wrote it."""

    original_message_id: str | None
    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str | None

    @property
    def failed(self) -> tuple[BouncedRecipient, ...]:
        """The recipients to mark ``bounced``: those whose address failed permanently."""
        return tuple(r for r in self.recipients if r.permanent)


# -- recognising a bounce ---------------------------------------------------------------------


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)  # compat32: what flufl.bounce expects, and it splits DSN blocks


def _is_report(msg: Message) -> bool:
    if msg.get_content_type() == "multipart/report":
        return str(msg.get_param("report-type") or "").lower() == "delivery-status"
    return any(part.get_content_type() == "message/delivery-status" for part in _own_parts(msg))


def _from_daemon(msg: Message) -> bool:
    local = normalise_address(str(msg.get("From", ""))).partition("@")[0]
    return local in _DAEMONS


def _null_return_path(msg: Message) -> bool:
    paths = msg.get_all("Return-Path") or []
    return bool(paths) and all(str(p).strip() in ("<>", "") for p in paths)


def _is_bounce(msg: Message) -> bool:
    if msg.get_content_type() == "multipart/report":
        return _is_report(msg)  # a read receipt or a feedback report is no bounce
    if _is_report(msg) or msg.get("X-Failed-Recipients"):
        return True
    # A non-MIME bounce: from the mail system, sent with the null reverse path. Auto-replies
    # also travel with a null path (RFC 3834) but come from a person's address.
    return _from_daemon(msg) and (_null_return_path(msg) or "Return-Path" not in msg)


def is_bounce(raw: bytes) -> bool:
    """Whether ``raw`` is a delivery status notification: a ``multipart/report`` of
    ``report-type=delivery-status``, a message with a ``message/delivery-status`` part or an
    ``X-Failed-Recipients`` header, or mail from MAILER-DAEMON/postmaster with an empty (or no)
    Return-Path. Auto-replies, read receipts and ordinary mail are not."""
    return _is_bounce(_parse(raw))


# -- reading the parts ------------------------------------------------------------------------


def _own_parts(msg: Message) -> Iterator[Message]:
    """Every part of the notice itself, never descending into a quoted ``message/rfc822``."""
    yield msg
    if msg.is_multipart() and msg.get_content_type() != "message/rfc822":
        for part in msg.get_payload():
            if isinstance(part, Message):
                yield from _own_parts(part)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _status_blocks(part: Message) -> list[Message]:
    """The blocks of a ``message/delivery-status`` part, each parsed as a header block. The
    parser usually splits them already; a part sent base64- or QP-encoded (Exchange does) is
    decoded and split here."""
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).lower()
    if isinstance(payload, list) and encoding in ("", "7bit", "8bit", "binary"):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, list):  # the parser took the encoded text for header blocks: undo that
        payload = "".join(block.as_string() for block in payload if isinstance(block, Message))
    data = str(payload).encode("ascii", errors="replace")
    try:
        if encoding == "base64":
            data = base64.b64decode(b"".join(data.split()))
        elif encoding == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return []
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    parser = email.parser.HeaderParser()
    return [parser.parsestr(block.strip() + "\n") for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


def _typed_value(value: str | None) -> str:
    """``"rfc822; a@b"`` -> ``"a@b"`` (RFC 3464 fields are ``type; value``)."""
    if value is None:
        return ""
    text = " ".join(str(value).split())
    kind, sep, rest = text.partition(";")
    return rest.strip() if sep else kind.strip()


def _address_field(block: Message, name: str) -> str:
    value = block.get(name)
    if value is None:
        return ""
    kind, sep, _ = " ".join(str(value).split()).partition(";")
    if sep and kind.strip().lower() not in ("rfc822", "unknown"):
        return ""  # an X.400 or other non-Internet address: nothing Postroom sent to
    address = normalise_address(_typed_value(value))
    return address if _ADDRESS.fullmatch(address) else ""


def _status(value: str | None, diagnostic: str) -> str | None:
    found = _STATUS.search(value or "")
    if found is None or found.group(2, 3) == ("0", "0"):
        # No code, or only the class (x.0.0): the diagnostic often has the precise one.
        better = _STATUS.search(diagnostic)
        if better is not None and (found is None or better.group(1) == found.group(1)):
            found = better
    return found.group(0) if found else None


def _diagnostic(value: str) -> str:
    """One line, bounded; a multi-line SMTP reply's repeated ``550-5.1.1`` prefixes removed."""
    text = " ".join(value.split())
    if lead := re.match(r"([245]\d\d)[- ]([245]\.\d{1,3}\.\d{1,3}) ", text):
        text = (
            lead.group(1)
            + " "
            + lead.group(2)
            + " "
            + re.sub(rf" {lead.group(1)}[- ]{re.escape(lead.group(2))}(?= )", "", text[lead.end() :]).strip()
        )
    return clean_text(text, DIAGNOSTIC_LIMIT)


def _recipient(block: Message) -> BouncedRecipient | None:
    address = _address_field(block, "Original-Recipient") or _address_field(block, "Final-Recipient")
    if not address:
        return None
    diagnostic = _diagnostic(_typed_value(block.get("Diagnostic-Code")))
    status = _status(block.get("Status"), diagnostic)
    action = str(block.get("Action", "")).split(";")[0].split("(")[0].strip().lower()
    if action not in ACTIONS:
        action = {"2": "delivered", "4": "delayed"}.get((status or "5")[0], "failed")
    permanent = action == "failed" and not (status or "5").startswith(("4", "2"))
    return BouncedRecipient(address, action, status, diagnostic, permanent)


def _original_id(msg: Message, per_message: Message | None) -> str | None:
    for part in _own_parts(msg):
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            quoted = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(quoted, Message) and (found := normalise_msgid(str(quoted.get("Message-ID", "")))):
                return found
        elif kind == "text/rfc822-headers":
            headers = email.parser.HeaderParser().parsestr(_text(part).replace("\r\n", "\n"))
            if found := normalise_msgid(str(headers.get("Message-ID", ""))):
                return found
    if per_message is not None and (found := normalise_msgid(str(per_message.get("X-Original-Message-ID", "")))):
        return found
    in_reply_to = str(msg.get("In-Reply-To", "")).split()
    if in_reply_to and (found := normalise_msgid(in_reply_to[0])):
        return found
    for part in _own_parts(msg):
        if part.get_content_type() == "text/plain":
            quoted_at = _QUOTE_MARKERS.search(_text(part))
            if quoted_at is not None:
                line = re.search(r"^Message-ID:[ \t]*(<[^>\s]+>)", _text(part)[quoted_at.end() :], re.I | re.M)
                if line and (found := normalise_msgid(line.group(1))):
                    return found
    return None


# -- the non-standard path ----------------------------------------------------------------------


def _notice_text(msg: Message) -> str:
    """The bounce's own words: its text parts up to where they start quoting the original
    (no ``message/rfc822`` part is entered), plus its ``X-Failed-Recipients`` header."""
    pieces: list[str] = []
    for part in _own_parts(msg):
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            text = _text(part)
            quoted_at = _QUOTE_MARKERS.search(text)
            pieces.append(text[: quoted_at.start()] if quoted_at else text)
    pieces += [str(value) for value in msg.get_all("X-Failed-Recipients") or []]  # last: prose gives more context
    return "\n".join(pieces)


def _context(notice: str, address: str) -> str:
    """The notice's lines about ``address``: its line and the indented ones that follow (Exim's
    layout), up to a blank line."""
    lines = notice.splitlines()
    for i, line in enumerate(lines):
        if address in line.lower():
            block = [line]
            for following in lines[i + 1 : i + 8]:
                if not following.strip():
                    break
                block.append(following)
            return " ".join(" ".join(block).split())
    return ""


def _fallback(msg: Message) -> tuple[BouncedRecipient, ...]:
    temporary, permanent = all_failures(msg)
    notice = _notice_text(msg)
    named = notice.lower()
    own_fields = [str(value) for name in ("From", "To", "Cc", "Sender") for value in msg.get_all(name) or []]
    own = {normalise_address(address) for _, address in getaddresses(own_fields)}  # the notice's own parties
    found: list[BouncedRecipient] = []
    for raw_address, is_permanent in sorted(
        [(a, False) for a in temporary - permanent] + [(a, True) for a in permanent]
    ):
        address = normalise_address(raw_address.decode("utf-8", errors="replace"))
        if not _ADDRESS.fullmatch(address) or address in own or address not in named:
            continue  # only in the quoted original, or not an address at all
        context = _context(notice, address)
        status_match = _STATUS.search(context)
        status = status_match.group(0) if status_match else None
        if status is None and (code := _SMTP_CODE.search(context.replace(address, ""))):
            status = f"{code.group(1)}.0.0"
        permanent_here = is_permanent and not (status or "5").startswith("4")
        action = "failed" if is_permanent else "delayed"
        found.append(BouncedRecipient(address, action, status, _diagnostic(context), permanent_here))
    return tuple(found[:MAX_RECIPIENTS])


# -- the whole ---------------------------------------------------------------------------------


def parse_bounce(raw: bytes) -> Bounce | None:
    """The bounce in ``raw``, or None when it is not one (see :func:`is_bounce`). A bounce whose
    recipients cannot be made out is still a Bounce, with no recipients, so the caller records it
    as a bounce rather than as data."""
    msg = _parse(raw)
    if not _is_bounce(msg):
        return None
    per_message: Message | None = None
    recipients: list[BouncedRecipient] = []
    seen: set[tuple[str, str]] = set()
    for part in _own_parts(msg):
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = _status_blocks(part)
        if blocks and per_message is None:
            per_message = blocks[0]
        for block in blocks[1:]:
            recipient = _recipient(block)
            if recipient is not None and (recipient.address, recipient.action) not in seen:
                seen.add((recipient.address, recipient.action))
                recipients.append(recipient)
    found = tuple(recipients[:MAX_RECIPIENTS]) or _fallback(msg)
    reporting = _typed_value(per_message.get("Reporting-MTA")) if per_message is not None else ""
    return Bounce(_original_id(msg, per_message), found, clean_text(reporting, 255) or None)
