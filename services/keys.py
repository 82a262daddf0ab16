"""Re-sealing stored credentials under the current key (``postroom keys rotate``).

After ``security.secret_key`` changes (the old key kept in ``security.previous_keys``),
every account's sealed secret is read, opened with whichever key opens it and sealed
again under the current key. Each account is one short write of its own, and the
write is a compare-and-set on the sealed value that was read: if the account's tokens
changed in between (a worker's OAuth refresh, :class:`sync.accounts.TokenSaver`, or a
reconnect), the write changes nothing and the account is read again, so a newer
token is never replaced by an older one. Webhook signing secrets (and the one being
retired during a webhook rotation) are re-sealed the same way, one subscription at a time.
docs/security.md has the whole procedure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from postroom.crypto import SecretBox, SecretError
from postroom.models import MailAccount, WebhookSubscription

ATTEMPTS = 5  # reads of one account whose secret keeps changing under us


@dataclass
class Rotation:
    """What ``postroom keys rotate`` did, by account."""

    resealed: list[int] = field(default_factory=list)  # now sealed under the current key
    current: list[int] = field(default_factory=list)  # were sealed under it already
    unreadable: list[int] = field(default_factory=list)  # no configured key opens them
    busy: list[int] = field(default_factory=list)  # changed on every attempt; run again
    webhooks_resealed: list[int] = field(default_factory=list)  # the same, by webhook subscription
    webhooks_current: list[int] = field(default_factory=list)
    webhooks_unreadable: list[int] = field(default_factory=list)
    webhooks_busy: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "resealed": len(self.resealed),
            "current": len(self.current),
            "unreadable": len(self.unreadable),
            "unreadable_accounts": self.unreadable,
            "busy_accounts": self.busy,
            "webhooks_resealed": len(self.webhooks_resealed),
            "webhooks_current": len(self.webhooks_current),
            "unreadable_webhooks": self.webhooks_unreadable,
            "busy_webhooks": self.webhooks_busy,
        }


def rotate_secrets(config: Config, sessions: sessionmaker[Session]) -> Rotation:
    """Seal every account's stored secret under ``security.secret_key``."""
    box = SecretBox.for_config(config.security)
    done = Rotation()
    with sessions() as s:
        ids = list(s.scalars(select(MailAccount.id).order_by(MailAccount.id)))
    for account_id in ids:
        outcome = _reseal_one(box, sessions, account_id)
        if outcome is not None:
            getattr(done, outcome).append(account_id)
    with sessions() as s:
        subs = list(s.scalars(select(WebhookSubscription.id).order_by(WebhookSubscription.id)))
    for sub_id in subs:
        outcome = _reseal_webhook(box, sessions, sub_id)
        if outcome is not None:
            getattr(done, f"webhooks_{outcome}").append(sub_id)
    return done


def _reseal_one(box: SecretBox, sessions: sessionmaker[Session], account_id: int) -> str | None:
    """One account: "resealed", "current", "unreadable", "busy", or None if it was deleted."""
    for _ in range(ATTEMPTS):
        with sessions() as s:
            sealed = s.scalar(select(MailAccount.secret).where(MailAccount.id == account_id))
        if sealed is None:
            return None
        try:
            fresh = box.reseal(sealed)
        except SecretError:
            return "unreadable"
        if fresh is None:
            return "current"
        with sessions.begin() as s:
            changed = s.execute(
                update(MailAccount)
                .where(MailAccount.id == account_id, MailAccount.secret == bytes(sealed))
                .values(secret=fresh)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if changed:
            return "resealed"
        # the secret changed since we read it (a token refresh, a reconnect): read it again
    return "busy"


def _reseal_webhook(box: SecretBox, sessions: sessionmaker[Session], sub_id: int) -> str | None:
    """One webhook subscription's secrets: "resealed", "current", "unreadable", "busy", or
    None if it was deleted; compare-and-set on both sealed values, as for an account."""
    for _ in range(ATTEMPTS):
        with sessions() as s:
            row = s.execute(
                select(WebhookSubscription.secret, WebhookSubscription.previous_secret).where(
                    WebhookSubscription.id == sub_id
                )
            ).one_or_none()
        if row is None:
            return None
        sealed, previous = row
        try:
            fresh = box.reseal(sealed)
            fresh_previous = None if previous is None else box.reseal(previous)
        except SecretError:
            return "unreadable"
        if fresh is None and fresh_previous is None:
            return "current"
        same_previous = (
            WebhookSubscription.previous_secret.is_(None)
            if previous is None
            else WebhookSubscription.previous_secret == bytes(previous)
        )
        with sessions.begin() as s:
            changed = s.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == sub_id, WebhookSubscription.secret == bytes(sealed), same_previous)
                .values(secret=fresh or sealed, previous_secret=fresh_previous or previous)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if changed:
            return "resealed"
    return "busy"
