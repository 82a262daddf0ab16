"""The demo's recruiting scenario (docs/demo.md): who is in it, and the mail they exchanged.

Pure data and pure functions, no I/O. :mod:`services.demo` creates the demo organisation's
user, mailboxes, applicants and template from the people here; the demo's mail server
(:mod:`standins.demo`) is filled with :func:`deliveries`, the copies of every message in the
two recruiters' Gmail mailboxes as Gmail would hold them (INBOX, SENT, UNREAD labels).

Northwind Robotics hires a backend engineer and a product designer. Rita (recruiter) and Sam
(hiring manager) each have a mailbox; what they show:

* Maya Okafor applies from her university address with a résumé (a PDF attachment), then
  writes from her personal address; the thread runs through both mailboxes, and the messages
  Rita and Sam both received are one message each, held by two mailboxes;
* Jonas Weber's mailbox answers Sam with an out-of-office auto-reply (``Auto-Submitted:
  auto-replied``) before Jonas himself replies;
* Priya Raman sends an HTML portfolio with a remote image (blocked until "show images"),
  then writes from a second address;
* Daniel Brooks is referred; once the engine has synced, the demo sends him a tracked message
  from a template (:data:`TRACKED_SEND`), which he opens and answers (:func:`applicant_reply`);
* Lena Fischer withdraws; and one internal message between Rita and Sam involves no applicant.

A third mailbox, ``applications@``, is a processing mailbox (:data:`APPLICATIONS`): its INBOX
holds what :data:`_INBOUND_MAILS` lists (a careers-site form with a JSON part, an agency's
German YAML profile, Maya's updated résumé, one form whose JSON part is broken), and Daniel's
answer to the tracked send is copied to it.

>>> people = {d.mailbox for d in deliveries(datetime(2027, 3, 1, 12, tzinfo=UTC))}
>>> sorted(people)
['applications@northwind.test', 'rita@northwind.test', 'sam@northwind.test']
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, getaddresses
from typing import Any

from postroom.demo_documents import MAYA_CV, MAYA_CV_2025

ORG_NAME = "Demo"
USER_EMAIL = "demo@postroom.test"
USER_NAME = "Demo Recruiter"
# a remote image in an applicant's HTML mail: loaded only through the image proxy, after "show images"
PORTFOLIO_IMAGE = (
    "https://upload.wikimedia.org/wikipedia/commons/thumb/4/47/PNG_transparency_demonstration_1.png/"
    "280px-PNG_transparency_demonstration_1.png"
)


@dataclass(frozen=True)
class Person:
    name: str
    address: str

    @property
    def header(self) -> str:
        return formataddr((self.name, self.address))


@dataclass(frozen=True)
class DemoApplicant:
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    """One copy of a scenario message in one mailbox of the demo's mail server."""

    mailbox: str
    raw: bytes
    labels: tuple[str, ...]
    date_ms: int  # Gmail's internalDate


@dataclass(frozen=True)
class DemoTemplate:
    name: str
    subject: str
    body: str


@dataclass(frozen=True)
class TrackedSend:
    """The message the demo sends from the app, tracked, once the first sync is done."""

    sender: str
    to: str
    template: str
    data: dict[str, Any]


RITA = Person("Rita Alvarez", "rita@northwind.test")
SAM = Person("Sam Chen", "sam@northwind.test")
RECRUITERS = (RITA, SAM)
# the processing mailbox (docs/inbound.md): the careers address forms, agencies and applicants write to
APPLICATIONS = Person("Northwind Careers", "applications@northwind.test")

MAYA_UNI = Person("Maya Okafor", "maya.okafor@uni-leiden.example")
MAYA = Person("Maya Okafor", "maya.okafor@example.com")
JONAS = Person("Jonas Weber", "jonas.weber@example.net")
PRIYA_STUDIO = Person("Priya Raman", "priya@raman-design.example")
PRIYA = Person("Priya Raman", "priya.raman@example.com")
DANIEL = Person("Daniel Brooks", "daniel.brooks@example.org")
LENA = Person("Lena Fischer", "lena.fischer@example.com")

APPLICANTS = (
    DemoApplicant("Maya Okafor", (MAYA_UNI.address, MAYA.address)),
    DemoApplicant("Jonas Weber", (JONAS.address,)),
    DemoApplicant("Priya Raman", (PRIYA_STUDIO.address, PRIYA.address)),
    DemoApplicant("Daniel Brooks", (DANIEL.address,)),
    DemoApplicant("Lena Fischer", (LENA.address,)),
)

TEMPLATE = DemoTemplate(
    name="Technical interview invitation",
    subject="Next steps: technical interview for the {{ role }} role",
    body=(
        "Hi {{ applicant.name }},\n\n"
        "Thank you for your time so far. We would like to invite you to a technical interview for the "
        "**{{ role }}** role.\n\n"
        "Would **{{ slot }}** work for you? It is a 60-minute video call with {{ interviewer }}: a short "
        "system design discussion, then questions from you.\n\n"
        "Our [interview guide](https://northwind.example/careers/interview-guide) says what to expect.\n\n"
        "Best regards,\n\n{{ sender.name | capitalize }}\n"
    ),
)
TRACKED_SEND = TrackedSend(
    sender=RITA.address,
    to=DANIEL.address,
    template=TEMPLATE.name,
    data={"role": "Senior Backend Engineer", "slot": "Thursday at 10:00 CET", "interviewer": "Sam Chen"},
)


@dataclass(frozen=True)
class _Mail:
    key: str
    sender: Person
    to: tuple[Person, ...]
    subject: str
    ago: tuple[int, int, int]  # days ago, hour, minute (UTC)
    text: str
    cc: tuple[Person, ...] = ()
    answers: str | None = None  # key of the message this one replies to
    html: str | None = None
    attachment: tuple[str, str, bytes] | None = None  # filename, content type, bytes
    auto_reply: bool = False
    unread: bool = False
    json_part: str | None = None  # an inline application/json part (a web form's data)


_PRIYA_HTML = f"""<!doctype html>
<html><body style="font-family: Georgia, serif; color: #222">
<p>Hello Sam,</p>
<p>As promised, here is a short preview of the case study I mentioned: the redesign of a warehouse
robot's <strong>operator console</strong>, from field interviews to the shipped interface.</p>
<p><img src="{PORTFOLIO_IMAGE}" alt="Case study preview: operator console" width="280"></p>
<p>The full case study is on my site:
<a href="https://raman-design.example/work/operator-console">raman-design.example/work/operator-console</a>.</p>
<p>Warm regards,<br>Priya Raman<br><span style="color:#888">Product designer</span></p>
</body></html>
"""

_MAILS = (
    _Mail(
        "maya-1",
        MAYA_UNI,
        (RITA,),
        "Application: Senior Backend Engineer (Maya Okafor)",
        (13, 9, 12),
        "Dear Ms Alvarez,\n\nI would like to apply for the Senior Backend Engineer position I saw on your "
        "careers page. I have three years of experience building order pipelines in Python and PostgreSQL, "
        "and I am finishing my MSc in distributed systems this spring.\n\nMy résumé is attached. I would be "
        "glad to tell you more.\n\nKind regards,\nMaya Okafor",
        attachment=("Maya-Okafor-CV.pdf", "application/pdf", MAYA_CV),
    ),
    _Mail(
        "maya-2",
        RITA,
        (MAYA_UNI,),
        "Re: Application: Senior Backend Engineer (Maya Okafor)",
        (12, 15, 40),
        "Hi Maya,\n\nThank you for your application, your background fits the role well. I am copying Sam "
        "Chen, who leads the platform team, so he can follow along.\n\nCould you tell us when you would be "
        "available for a first conversation next week?\n\nBest,\nRita",
        cc=(SAM,),
        answers="maya-1",
    ),
    _Mail(
        "maya-3",
        MAYA,
        (RITA,),
        "Re: Application: Senior Backend Engineer (Maya Okafor)",
        (12, 19, 5),
        "Hi Rita, hi Sam,\n\nThanks for the quick answer! I am writing from my personal address from now on, "
        "since my university account closes when I graduate.\n\nNext week I am free on Tuesday and Thursday "
        "afternoons.\n\nBest,\nMaya",
        cc=(SAM,),
        answers="maya-2",
    ),
    _Mail(
        "maya-4",
        SAM,
        (MAYA,),
        "Re: Application: Senior Backend Engineer (Maya Okafor)",
        (11, 10, 20),
        "Hi Maya,\n\nNice to meet you. Would Thursday at 14:00 work for a 45-minute call? I will send a video "
        "link the day before.\n\nSam",
        cc=(RITA,),
        answers="maya-3",
    ),
    _Mail(
        "maya-5",
        MAYA,
        (SAM,),
        "Re: Application: Senior Backend Engineer (Maya Okafor)",
        (11, 12, 2),
        "Hi Sam,\n\nThursday at 14:00 works for me. Looking forward to it!\n\nMaya",
        cc=(RITA,),
        answers="maya-4",
    ),
    _Mail(
        "lena-1",
        RITA,
        (LENA,),
        "Your application for Senior Backend Engineer",
        (10, 11, 0),
        "Hi Lena,\n\nThank you for applying to Northwind Robotics. We enjoyed reading about your work on "
        "fleet telemetry and would like to schedule a first call. Which days suit you next week?\n\nBest,\nRita",
    ),
    _Mail(
        "jonas-1",
        JONAS,
        (SAM,),
        "Product Designer application - Jonas Weber",
        (9, 8, 30),
        "Hello Sam,\n\nI am a product designer with six years of experience in industrial software, most "
        "recently for a forklift fleet manager. I would love to bring that to Northwind.\n\nBest regards,\n"
        "Jonas Weber",
    ),
    _Mail(
        "jonas-2",
        SAM,
        (JONAS,),
        "Re: Product Designer application - Jonas Weber",
        (8, 16, 10),
        "Hi Jonas,\n\nThanks for reaching out. Could you send us one case study you are proud of, with the "
        "problem, your process and the outcome?\n\nSam",
        answers="jonas-1",
    ),
    _Mail(
        "jonas-3",
        JONAS,
        (SAM,),
        "Automatic reply: Re: Product Designer application - Jonas Weber",
        (8, 16, 11),
        "I am out of the office until the 24th with limited access to email. I will reply when I am back.\n\n"
        "Jonas Weber",
        answers="jonas-2",
        auto_reply=True,
    ),
    _Mail(
        "priya-1",
        PRIYA_STUDIO,
        (SAM,),
        "Portfolio - Priya Raman (Product Designer)",
        (7, 11, 0),
        "Hello Sam,\n\nAs promised, here is a short preview of the case study I mentioned: the redesign of a "
        "warehouse robot's operator console.\n\nThe full case study: "
        "https://raman-design.example/work/operator-console\n\nWarm regards,\nPriya Raman",
        html=_PRIYA_HTML,
    ),
    _Mail(
        "priya-2",
        SAM,
        (PRIYA_STUDIO,),
        "Re: Portfolio - Priya Raman (Product Designer)",
        (6, 14, 30),
        "Hi Priya,\n\nThe operator console work is impressive, especially the field research. I am copying "
        "Rita to set up an interview. When are you available?\n\nSam",
        cc=(RITA,),
        answers="priya-1",
    ),
    _Mail(
        "priya-3",
        PRIYA,
        (SAM,),
        "Re: Portfolio - Priya Raman (Product Designer)",
        (6, 18, 0),
        "Hi Sam, hi Rita,\n\nThank you! (Writing from my personal address, the studio one is shared.) "
        "Tuesday or Wednesday next week would be ideal.\n\nPriya",
        cc=(RITA,),
        answers="priya-2",
        unread=True,
    ),
    _Mail(
        "daniel-1",
        DANIEL,
        (RITA,),
        "Referral: Daniel Brooks for the backend role",
        (5, 10, 5),
        "Hi Rita,\n\nAna Souza from your robotics team suggested I get in touch about the Senior Backend "
        "Engineer opening. I have been building real-time APIs in Go and Python for seven years.\n\nBest,\n"
        "Daniel Brooks",
    ),
    _Mail(
        "daniel-2",
        RITA,
        (DANIEL,),
        "Re: Referral: Daniel Brooks for the backend role",
        (5, 13, 30),
        "Hi Daniel,\n\nThanks for reaching out, Ana spoke highly of you. Could you share a link to some code "
        "you have written?\n\nBest,\nRita",
        answers="daniel-1",
    ),
    _Mail(
        "jonas-4",
        JONAS,
        (SAM,),
        "Re: Product Designer application - Jonas Weber",
        (4, 9, 45),
        "Hi Sam,\n\nBack from holiday. Here is the case study: https://jonasweber.example/fleet-manager\n\n"
        "Happy to walk you through it.\n\nJonas",
        answers="jonas-2",
        unread=True,
    ),
    _Mail(
        "daniel-3",
        DANIEL,
        (RITA,),
        "Re: Referral: Daniel Brooks for the backend role",
        (3, 8, 50),
        "Hi Rita,\n\nSure: https://github.example/dbrooks/ratelimit is a rate limiter I maintain, used in "
        "production by a few companies.\n\nDaniel",
        answers="daniel-2",
    ),
    _Mail(
        "lena-2",
        LENA,
        (RITA,),
        "Re: Your application for Senior Backend Engineer",
        (2, 9, 15),
        "Hi Rita,\n\nThank you for the invitation. I have just accepted another offer, so I would like to "
        "withdraw my application. I wish you all the best with the search.\n\nLena",
        answers="lena-1",
        unread=True,
    ),
    _Mail(
        "internal-1",
        RITA,
        (SAM,),
        "Shortlist for Thursday's debrief",
        (2, 17, 30),
        "Sam,\n\nFor Thursday: Maya and Daniel for backend, Priya and Jonas for design. Lena has withdrawn.\n\nRita",
    ),
)


CAREERS_SITE = Person("Northwind Careers Site", "no-reply@jobs.northwind.example")
AGENCY = Person("Katrin Vogel (Vogel Personalberatung)", "k.vogel@vogel-personal.example")

# the processing mailbox's INBOX (applications@): what the worker's first run takes
_INBOUND_MAILS = (
    _Mail(
        "form-1",
        CAREERS_SITE,
        (APPLICATIONS,),
        "New application: Product Designer (Aiko Tanaka)",
        (1, 8, 10),
        "A new application was submitted on jobs.northwind.example.\n\nThe form's answers are attached as JSON.",
        json_part=(
            '{"Full name": "Aiko Tanaka", "E-mail": "aiko.tanaka@example.jp", "Position": "Product Designer", '
            '"Portfolio": "https://aiko-tanaka.example/work", "Available from": "2027-05-01", '
            '"Relocation": true, "Salary expectation": "70000 EUR"}'
        ),
    ),
    _Mail(
        "agency-1",
        AGENCY,
        (APPLICATIONS,),
        "Kandidatenvorschlag: Senior Backend Engineer",
        (1, 11, 35),
        "Vorname: Felix\nNachname: Hartmann\nE-Mail: felix.hartmann@example.de\nPosition: Senior Backend "
        "Engineer\nVerfügbar ab: 1. Juni\nGehaltsvorstellung: 85.000 EUR\nSprachen: Deutsch, Englisch\n\n"
        "Guten Tag,\n\nanbei unser Vorschlag für Ihre Stelle. Herr Hartmann bringt acht Jahre Erfahrung "
        "mit Go und PostgreSQL mit.\n\nMit freundlichen Grüßen\nKatrin Vogel\nVogel Personalberatung",
    ),
    _Mail(
        "maya-6",
        MAYA,
        (APPLICATIONS,),
        "Updated résumé - Maya Okafor",
        (0, 7, 40),
        "Hello,\n\nRita asked me to send my updated résumé to this address before Thursday's "
        "interview: it is attached. My thesis is now finished.\n\nBest regards,\nMaya Okafor",
        attachment=("Maya-Okafor-CV-2025.pdf", "application/pdf", MAYA_CV_2025),
    ),
    _Mail(
        "form-2",
        CAREERS_SITE,
        (APPLICATIONS,),
        "New application: Senior Backend Engineer (Tom Becker)",
        (0, 8, 5),
        "A new application was submitted on jobs.northwind.example.\n\nThe form's answers are attached as JSON.",
        json_part='{"Full name": "Tom Becker", "E-mail": "tom.becker@example.com", "Position": "Senior Back',
    ),
)


def deliveries(now: datetime) -> list[Delivery]:
    """Every copy of every scenario message in the recruiters' mailboxes, oldest first, then the
    processing mailbox's INBOX, dated relative to ``now`` (the scenario spans the last two weeks)."""
    out: list[Delivery] = []
    sent: dict[str, tuple[str, str, str]] = {}  # key -> (Message-ID, References, first paragraph)
    for mail in _MAILS:
        when = _date(now, *mail.ago)
        message_id = f"<{mail.key}.{uuid.uuid4().hex[:12]}@{mail.sender.address.split('@')[1]}>"
        parent = sent.get(mail.answers) if mail.answers else None
        references = f"{parent[1]} {parent[0]}".strip() if parent else ""
        raw = _compose(mail, when, message_id, parent[0] if parent else None, references)
        sent[mail.key] = (message_id, references, mail.text.split("\n\n")[0])
        people = {p.address for p in (*mail.to, *mail.cc)}
        for recruiter in RECRUITERS:
            labels: list[str] = []
            if recruiter == mail.sender:
                labels.append("SENT")
            if recruiter.address in people:
                labels.extend(["INBOX", *(["UNREAD"] if mail.unread else [])])
            if labels:
                out.append(Delivery(recruiter.address, raw, tuple(labels), int(when.timestamp() * 1000)))
    for mail in _INBOUND_MAILS:
        when = _date(now, *mail.ago)
        message_id = f"<{mail.key}.{uuid.uuid4().hex[:12]}@{mail.sender.address.split('@')[1]}>"
        raw = _compose(mail, when, message_id, None, "")
        out.append(Delivery(APPLICATIONS.address, raw, ("INBOX", "UNREAD"), int(when.timestamp() * 1000)))
    return out


def _date(now: datetime, days: int, hour: int, minute: int) -> datetime:
    day = (now.astimezone(UTC) - timedelta(days=days)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return min(day, now.astimezone(UTC) - timedelta(minutes=5))


def _compose(mail: _Mail, when: datetime, message_id: str, in_reply_to: str | None, references: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = mail.sender.header
    msg["To"] = ", ".join(p.header for p in mail.to)
    if mail.cc:
        msg["Cc"] = ", ".join(p.header for p in mail.cc)
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = references
    if mail.auto_reply:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(mail.text + "\n")
    if mail.html:
        msg.add_alternative(mail.html, subtype="html")
    if mail.json_part is not None:
        msg.add_attachment(mail.json_part.encode(), maintype="application", subtype="json", disposition="inline")
    if mail.attachment:
        filename, content_type, data = mail.attachment
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


# ------------------------------------------------------------------ after the tracked send

_PIXEL = re.compile(r"""["'](https?://[^"'\s]+/t/o/[^"'\s]+\.gif)["']""")


def pixel_url(copy: bytes) -> str | None:
    """The tracking pixel's URL in a recipient's copy of a tracked message (None: not tracked)."""
    message = BytesParser(policy=default_policy).parsebytes(copy)
    for part in message.walk():
        if part.get_content_type() == "text/html":
            found = _PIXEL.search(str(part.get_content()))
            if found:
                return found.group(1).replace("&amp;", "&")
    return None


def applicant_reply(copy: bytes, now: datetime) -> tuple[str, bytes]:
    """The applicant's answer to their copy of the tracked message, addressed as their mail
    client would (to its Reply-To, in its thread), copied to the processing mailbox
    (:data:`APPLICATIONS`): (the recruiter mailbox it lands in, raw)."""
    head = BytesParser(policy=default_policy).parsebytes(copy, headersonly=True)
    reply_to = str(head.get("Reply-To") or head.get("From") or "")
    sender = getaddresses([str(head.get("From", ""))])[0][1].lower()
    mailbox = next(p.address for p in RECRUITERS if p.address == sender)
    msg = EmailMessage()
    msg["From"] = DANIEL.header
    msg["To"] = ", ".join(formataddr(pair) for pair in getaddresses([reply_to]))
    msg["Cc"] = APPLICATIONS.header  # the processing mailbox gets a copy, routed by the Reply-To's token
    msg["Subject"] = "Re: " + " ".join(str(head.get("Subject", "")).split())
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = f"<reply.{uuid.uuid4().hex[:12]}@example.org>"
    msg["In-Reply-To"] = str(head.get("Message-ID", ""))
    msg["References"] = str(head.get("Message-ID", ""))
    msg.set_content(
        "Hi Rita,\n\nThursday at 10:00 works well for me, thank you. I will read the interview guide "
        "beforehand.\n\nBest,\nDaniel\n"
    )
    return mailbox, msg.as_bytes(policy=SMTP)
