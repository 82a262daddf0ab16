"""Every state Postroom stores, as a :class:`enum.StrEnum` (the database holds their values).

Each state machine is described once, where it runs: accounts in :mod:`sync.scheduler`,
folders in :mod:`sync.engine`, outbox messages and their recipients in :mod:`sync.outbox`.
"""

from __future__ import annotations

import enum


class AccountStatus(enum.StrEnum):
    """An account's health (``mail_accounts.status``)."""

    ACTIVE = "active"  # synced every sync.interval
    SYNCING = "syncing"  # a worker holds its lease
    BACKING_OFF = "backing-off"  # the last pass failed for a transient reason; retried later
    RECONNECT_NEEDED = "reconnect-needed"  # the server refused the credentials; not retried until reconnected
    DISABLED = "disabled"  # an administrator turned it off: never synced, and reconnecting keeps it so


SCHEDULED = (AccountStatus.ACTIVE, AccountStatus.BACKING_OFF, AccountStatus.SYNCING)  # the worker picks up when due


class FolderState(enum.StrEnum):
    """Where a folder is in its sync (``folders.state``)."""

    INITIAL = "initial"  # no cursor yet: every id is listed
    INCREMENTAL = "incremental"  # changes since the stored cursor
    RESYNC = "resync"  # the cursor stopped being valid: listed again, without duplicates


class OutboxStatus(enum.StrEnum):
    """Where an outbox message is (``outbox.status``)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    UNCERTAIN = "uncertain"
    FAILED = "failed"


OPEN_OUTBOX = (OutboxStatus.QUEUED, OutboxStatus.SENDING, OutboxStatus.UNCERTAIN)  # not settled yet
# A tracked send's recipients (``outbox_recipients.status``) go through the same states one by one.


class SendMode(enum.StrEnum):
    """How a message went out (``outbox.mode``)."""

    SINGLE = "single"  # one message to every recipient (untracked)
    SMTP = "smtp"  # tracked: one SMTP transaction per recipient, every copy with the same visible headers
    API = "api"  # tracked where only the provider's API may send: one copy per recipient naming only them


class RecipientKind(enum.StrEnum):
    """Where a recipient stands on a message (``outbox_recipients.kind``)."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"  # never written into any header


class HitKind(enum.StrEnum):
    """A tracking hit (``tracking_events.kind``)."""

    OPEN = "open"  # the pixel was fetched
    CLICK = "click"  # a rewritten link was followed


class BodyPolicy(enum.StrEnum):
    """Which message bodies are fetched and kept (``sync.body_policy``)."""

    APPLICANTS = "applicants"  # messages that involve a known applicant
    ALL = "all"
    NONE = "none"


class UserRole(enum.StrEnum):
    """What a user of the web app may do (``users.role``)."""

    ADMIN = "admin"  # everything a recruiter may, and manage the organisation's users
    RECRUITER = "recruiter"  # mailboxes, applicants, templates, sending


class DeliveryStatus(enum.StrEnum):
    """Where one webhook delivery is (``webhook_deliveries.status``); the schedule is in :mod:`sync.webhooks`."""

    PENDING = "pending"  # not tried yet
    FAILED = "failed"  # the last attempt failed; tried again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    GAVE_UP = "gave_up"  # every attempt of the schedule failed, or the receiver answered 410 Gone


OPEN_DELIVERIES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)  # the worker still tries them


class WebhookEvent(enum.StrEnum):
    """An event an organisation's webhooks may subscribe to (``webhook_subscriptions.events``)."""

    INBOUND_PROCESSED = "inbound.processed"  # a processing mailbox turned a message into data
    INBOUND_FAILED = "inbound.failed"  # ... or moved it to failed/
    MESSAGE_RECEIVED = "message.received"  # mail from an applicant
    MESSAGE_OPENED = "message.opened"  # a person opened a tracked copy
    MESSAGE_CLICKED = "message.clicked"  # a person followed a tracked link
    MESSAGE_REPLIED = "message.replied"  # a recipient replied
    MESSAGE_BOUNCED = "message.bounced"  # a delivery status notification named a recipient
    ACCOUNT_RECONNECT_NEEDED = "account.reconnect_needed"  # a mailbox's server refused its credentials


class InboundStatus(enum.StrEnum):
    """Where a message a processing mailbox took is (``inbound_items.status``); see :mod:`sync.inbound`."""

    PROCESSED = "processed"  # turned into data; moved (or to be moved) to the processed folder
    FAILED = "failed"  # could not be taken; moved (or to be moved) to the failed folder with the reason


class MoveMode(enum.StrEnum):
    """How a processing mailbox moves messages (``inbound_mailboxes.move_mode``)."""

    AUTO = "auto"  # MOVE where the server announces it, else COPY + STORE \Deleted + UID EXPUNGE
    COPY_DELETE = "copy-delete"  # always COPY + STORE \Deleted + UID EXPUNGE (servers whose MOVE is broken)
