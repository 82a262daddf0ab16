"""A private aiosmtpd server (``tests/rig/smtp_sink.py``) for send-path tests that need its
fault modes (a connection dropped after DATA, a server that never answers, one refused
recipient...; see the sink's docstring), which the rig's Postfix does not have.

It authenticates against the rig's Dovecot users (the same passwd and token files) and
delivers nothing: every message it accepts is captured, with its envelope, in its own
directory, so a test can see exactly which SMTP transactions reached a server.

    with faulty_smtp(mail_rig) as smtp:
        ... account with smtp_port=smtp.port ...
        (meta, raw), = smtp.received("<id@host>")
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rig.mailrig import HERE, MailRig, free_port, wait_banner


@dataclass
class FaultySmtp:
    port: int  # submission: AUTH required, as for a recruiter's account
    capture: Path

    def transactions(self) -> list[tuple[dict[str, Any], bytes]]:
        """Every message the server received its whole DATA for, oldest first."""
        out = []
        for meta_path in sorted(self.capture.glob("*.json")):
            raw = meta_path.with_suffix(".eml").read_bytes()
            out.append((json.loads(meta_path.read_text()), raw))
        return out

    def received(self, message_id: str) -> list[tuple[dict[str, Any], bytes]]:
        """The transactions that carried the message with this Message-ID."""
        return [(m, raw) for m, raw in self.transactions() if f"Message-ID: {message_id}\r\n".encode() in raw]

    def wait_for(self, message_id: str, count: int = 1, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received(message_id)) < count:
            assert time.monotonic() < deadline, f"{message_id} did not reach the SMTP server"
            time.sleep(0.05)


@contextmanager
def faulty_smtp(rig: MailRig) -> Iterator[FaultySmtp]:
    capture = Path(tempfile.mkdtemp(prefix="faulty-smtp-"))
    mx, submission = free_port(), free_port()
    log = open(capture.parent / f"{capture.name}.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "smtp_sink.py"),
            "--mx-port",
            str(mx),
            "--submission-port",
            str(submission),
            "--local-domains",
            "",
            "--passwd",
            rig.p("etc", "passwd"),
            "--tokens",
            rig.p("etc", "tokens.json"),
            "--capture-dir",
            str(capture),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_banner(submission, b"220", proc=proc, what="smtp_sink")
        yield FaultySmtp(submission, capture)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(capture, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)
