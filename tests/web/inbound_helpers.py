"""An attachment a processing mailbox kept for an applicant, stored the way sync.inbound stores
one (bytes in the blob directory), for the web tests that download it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
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
