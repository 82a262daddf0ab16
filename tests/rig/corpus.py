"""Deterministic generator of realistic test mail (stdlib ``email`` only).

Shared by the test rig (``MailRig.seed_maildir``) and the benchmark in ``bench/``.

Each message is 2-50 KB (log-uniform) and one of: text/plain (~45 %),
multipart/alternative text + HTML (~35 %), multipart/mixed with 1-2 attachments
(PDF-ish binary, CSV, PNG-ish) in base64 (~20 %). Messages come in
conversations of 1-12 with Message-ID / In-Reply-To / References chains, "Re: "
subjects and quoted replies; some subjects and display names are non-ASCII
(RFC 2047). Dates spread over one year, ascending inside a thread.

    for item in generate(n, seed): item.raw, item.date, item.flags, item.msgid
    messages(n, seed)              -> list[Item]
    write_maildir(items, path)     -> (count, bytes)   # Dovecot-ready cur/ files

CLI: ``python -m tests.rig.corpus N --maildir DIR`` or ``python -m tests.rig.corpus N OUTDIR``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

FIRST = [
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Erin",
    "Frank",
    "Grace",
    "Heidi",
    "Ivan",
    "Judy",
    "Mallory",
    "Niaj",
    "Olivia",
    "Peggy",
    "Rupert",
    "Sybil",
    "Trent",
    "Victor",
    "Walter",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Müller",
    "Chloé",
    "Renée",
]
LAST = [
    "Smith",
    "Jones",
    "Nguyen",
    "Garcia",
    "Müller",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Okafor",
    "Ivanova",
    "Haddad",
    "O'Brien",
]
DOMAINS = ["example.test", "example.org", "corp.example", "mail.example.net"]
TOPICS = [
    "quarterly report",
    "lunch on friday",
    "build is broken",
    "invoice #{n}",
    "design review",
    "travel plans",
    "contract draft",
    "release {n}.0 checklist",
    "server migration",
    "team offsite",
    "bug {n}: crash on startup",
    "holiday schedule",
    "budget 2025",
    "Überprüfung der Zahlen",
    "réunion de lundi",
    "Ответ по проекту",
    "会議の議事録",
    "weekly sync notes",
    "customer feedback",
    "password reset policy",
]
WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "ut",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "meeting",
    "deadline",
    "project",
    "server",
    "release",
    "customer",
    "invoice",
    "please",
    "review",
    "attached",
    "thanks",
    "regards",
    "schedule",
    "update",
    "status",
]

OWNER = Address("Alice Test", "alice", "example.test")


@dataclass(frozen=True)
class Item:
    """One generated message: raw RFC 5322 bytes (CRLF), its date and IMAP flags."""

    raw: bytes
    date: dt.datetime
    flags: tuple[str, ...]
    msgid: str
    thread: int


def _people(rng, n=60):
    out = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        user = (first + "." + last).lower().encode("ascii", "ignore").decode()
        user = "".join(c for c in user if c.isalnum() or c == ".") + str(i)
        out.append(Address(f"{first} {last}", user, rng.choice(DOMAINS)))
    return out


def _para(rng, nwords):
    w = [rng.choice(WORDS) for _ in range(nwords)]
    w[0] = w[0].capitalize()
    lines, line = [], []
    for x in w:
        line.append(x)
        if len(" ".join(line)) > 66:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines) + "."


def _text(rng, nbytes):
    paras, size = [], 0
    while size < nbytes:
        p = _para(rng, rng.randint(20, 120))
        paras.append(p)
        size += len(p) + 2
    return "\n\n".join(paras)[: max(nbytes, 200)]


def _html(text):
    body = "".join(f"<p>{p.replace(chr(10), ' ')}</p>\n" for p in text.split("\n\n"))
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        "<style>p{font-family:Arial,sans-serif;font-size:14px}</style>"
        f"</head><body>\n{body}</body></html>\n"
    )


def _attachment(rng, nbytes):
    kind = rng.random()
    if kind < 0.4:
        data = b"%PDF-1.4\n" + rng.randbytes(nbytes)
        return data, "application", "pdf", f"report-{rng.randint(1, 999)}.pdf"
    if kind < 0.7:
        rows = ["id,name,amount,date"]
        while sum(len(r) + 1 for r in rows) < nbytes:
            rows.append(
                f"{len(rows)},{rng.choice(WORDS)},"
                f"{rng.randint(1, 99999) / 100},2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            )
        return ("\n".join(rows) + "\n").encode(), "text", "csv", "data.csv"
    data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(nbytes)
    return data, "image", "png", f"screenshot {rng.randint(1, 99)}.png"


def generate(
    n: int = 10000,
    seed: int = 1,
    owner: Address = OWNER,
    start: dt.datetime | None = None,
    domain: str = "example.test",
) -> Iterator[Item]:
    """Yield ``n`` messages; the same ``seed`` always gives the same bytes."""
    rng = random.Random(seed)
    people = _people(rng)
    start = start or dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC)
    span = 365 * 86400
    produced, thread_no = 0, 0
    while produced < n:
        thread_no += 1
        tlen = min(n - produced, 1 if rng.random() < 0.45 else rng.randint(2, 12))
        topic = rng.choice(TOPICS).format(n=rng.randint(1, 9999))
        participants = rng.sample(people, rng.randint(1, 4))
        t = start + dt.timedelta(seconds=rng.randint(0, span))
        chain, prev_text = [], ""
        for k in range(tlen):
            sender = owner if (k > 0 and rng.random() < 0.25) else rng.choice(participants)
            to = [owner] if sender is not owner else [rng.choice(participants)]
            cc = rng.sample(people, rng.randint(0, 3)) if rng.random() < 0.3 else []
            msgid = f"<{seed}.{thread_no}.{k}.{rng.getrandbits(40):x}@{domain}>"
            target = int(math.exp(rng.uniform(math.log(2048), math.log(50 * 1024))))
            m = EmailMessage(policy=SMTP)
            m["From"] = sender
            m["To"] = to
            if cc:
                m["Cc"] = cc
            m["Subject"] = ("Re: " if k else "") + topic
            m["Date"] = format_datetime(t)
            m["Message-ID"] = msgid
            if chain:
                m["In-Reply-To"] = chain[-1]
                m["References"] = " ".join(chain[-10:])
            m["MIME-Version"] = "1.0"
            if rng.random() < 0.1:
                m["List-Id"] = f"<{topic.split()[0].lower()}.lists.{domain}>"
            kind = rng.random()
            att_budget = 0
            if kind >= 0.8:  # attachments take a good part of the size
                att_budget = int(target * rng.uniform(0.4, 0.8))
            # base64 inflates by 4/3; keep the total near target
            text_len = max(300, int((target - att_budget * 4 / 3 - 600) / (2.3 if kind >= 0.45 else 1)))
            text = _text(rng, text_len)
            if prev_text:
                text += (
                    "\n\nOn "
                    + format_datetime(t)
                    + " someone wrote:\n"
                    + "\n".join("> " + ln for ln in prev_text.splitlines()[:15])
                )
            m.set_content(text)
            if kind >= 0.45 and (kind < 0.8 or rng.random() < 0.5):
                m.add_alternative(_html(text), subtype="html")
            if kind >= 0.8:
                parts = 1 if rng.random() < 0.7 else 2
                for _ in range(parts):
                    data, mt, st, fn = _attachment(rng, max(256, att_budget // parts))
                    m.add_attachment(data, maintype=mt, subtype=st, filename=fn)
            raw = m.as_bytes(policy=SMTP)
            r = rng.random()
            flags = (
                ("\\Seen",)
                if r < 0.7
                else (("\\Seen", "\\Flagged") if r < 0.75 else (("\\Seen", "\\Answered") if r < 0.85 else ()))
            )
            yield Item(raw, t, flags, msgid, thread_no)
            chain.append(msgid)
            prev_text = text[:2000]
            produced += 1
            t += dt.timedelta(minutes=rng.randint(3, 3000))


_FILE_SEQ = itertools.count(1)  # unique names across calls within one second

MAILDIR_FLAG = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Draft": "D", "\\Deleted": "T"}


def write_maildir(items: Iterable[Item], maildir: str, host: str = "rig") -> tuple[int, int]:
    """Write items straight into a Maildir (cur/) the way an MDA would.
    Files use LF line endings (Maildir convention), mtime = Date header, which
    Dovecot reports as INTERNALDATE.  Returns (count, bytes)."""
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, d), exist_ok=True)
    count = total = 0
    base = int(time.time())
    for it in items:
        data = it.raw.replace(b"\r\n", b"\n")
        fl = "".join(sorted(MAILDIR_FLAG[f] for f in it.flags))
        # zero-padded sequence keeps readdir-independent, sortable names
        name = f"{base}.M{next(_FILE_SEQ):09d}P{os.getpid()}.{host},S={len(data)},W={len(it.raw)}:2,{fl}"
        path = os.path.join(maildir, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        ts = it.date.timestamp()
        os.utime(path, (ts, ts))
        count += 1
        total += len(data)
    return count, total


def messages(n: int = 1000, seed: int = 1, **kwargs: object) -> list[Item]:
    """The first ``n`` messages of the deterministic corpus for ``seed`` as a list."""
    return list(generate(n, seed, **kwargs))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description="Generate a deterministic mail corpus.")
    ap.add_argument("n", type=int)
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--maildir")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.maildir:
        count, size = write_maildir(generate(a.n, a.seed), a.maildir)
    elif a.outdir:
        os.makedirs(a.outdir, exist_ok=True)
        count = size = 0
        for i, it in enumerate(generate(a.n, a.seed), 1):
            with open(os.path.join(a.outdir, f"{i:06d}.eml"), "wb") as f:
                f.write(it.raw)
            count += 1
            size += len(it.raw)
    else:
        ap.error("give OUTDIR or --maildir")
    print(f"{count} messages, {size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
