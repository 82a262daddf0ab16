"""For the web tests of processing mailboxes: an attachment kept for an applicant, stored the way
sync.inbound stores one (bytes in the blob directory); inbound messages to append to the rig's
Dovecot; a configuration under which a large message fails until retried."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config, load_config
from postroom.models_inbound import InboundAttachment, InboundItem, InboundMailbox
from sync.bodies import BlobStore


def keep_attachment(
    config: Config,
    sessions: sessionmaker[Session],
    org_id: int,
    account_id: int,
    applicant_id: int,
    data: bytes,
    filename: str = "cv.pdf",
    content_type: str = "application/pdf",
) -> int:
    """The attachment's id."""
    sha, path = BlobStore(config.storage.blob_dir).write(data)
    with sessions.begin() as s:
        box_id = s.scalar(select(InboundMailbox.id).where(InboundMailbox.account_id == account_id))
        if box_id is None:
            box = InboundMailbox(org_id=org_id, account_id=account_id)
            s.add(box)
            s.flush()
            box_id = box.id
        uid = (s.scalar(select(InboundItem.uid).order_by(InboundItem.uid.desc()).limit(1)) or 0) + 1
        item = InboundItem(org_id=org_id, mailbox_id=box_id, uidvalidity=1, uid=uid, applicant_id=applicant_id)
        s.add(item)
        s.flush()
        att = InboundAttachment(
            org_id=org_id,
            item_id=item.id,
            filename=filename,
            content_type=content_type,
            kind="pdf",
            size=len(data),
            sha256=sha,
            path=path,
            applicant_id=applicant_id,
        )
        s.add(att)
        s.flush()
        return att.id


def inbound_message(
    message_id: str,
    body: str = "Name: Grace Hopper\nRole: Admiral\n---\nThank you!",
    subject: str = "Application",
    sender: str = "Ann Applicant <ann@example.org>",
    attachment: tuple[str, bytes] | None = None,
    json_part: str | None = None,
) -> bytes:
    """A message as a partner or an applicant sends one to a processing mailbox: a text body (a
    YAML document first, by default), optionally an ``application/json`` part and an attachment."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "jobs@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = "Mon, 02 Jun 2025 09:30:00 +0000"
    msg.set_content(body)
    if json_part is not None:
        msg.add_alternative(json_part.encode(), maintype="application", subtype="json")
    if attachment is not None:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()


def strict_config(env: dict[str, str], tmp_path: Path, max_message_size: int = 2048) -> Config:
    """The test's configuration with ``[inbound] max_message_size`` lowered: a larger message
    fails ("over max_message_size") until the operator raises the limit and retries it."""
    path = tmp_path / "strict.toml"
    path.write_text(f"[inbound]\nmax_message_size = {max_message_size}\n")
    return load_config(path, env=env)
