"""What the compose page starts from: the organisation's mailboxes and templates to choose from,
and a draft — blank, a reply to a message, or a message to an applicant.

A reply goes from a mailbox that holds the message, to its sender (their Reply-To when they
set one) — or, for a message one of the organisation's mailboxes sent, to its recipients — with
``Re:`` before the subject and the message's Message-ID to answer, and for the applicant whose
history has it. A message to an applicant goes to their first address. Sending the draft is
:func:`services.sending.send_message`'s work.

>>> form = compose_form(session, org_id, reply_to=42)  # doctest: +SKIP
>>> form.draft.to, form.draft.subject
('ann@example.org', 'Re: Your application')
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.addresses import normalise_address
from postroom.errors import UserError
from postroom.models import Applicant, ApplicantAddress, Email, HistoryEntry, MailAccount, MessageCopy, Participant
from services.accounts import AccountSummary, list_accounts
from services.templates import TemplateSummary, list_templates

__all__ = ["ComposeForm", "Draft", "NothingToAnswer", "compose_form"]


class NothingToAnswer(UserError):
    """The message to reply to, or the applicant to write to, does not exist or is another
    organisation's (field ``reply_to`` or ``applicant``): the web app answers 404."""


@dataclass(frozen=True)
class Draft:
    """The compose form's starting values; ``about`` says in one phrase what it answers."""

    account_id: int | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    in_reply_to: str | None = None
    applicant_id: int | None = None
    about: str | None = None


@dataclass(frozen=True)
class ComposeForm:
    accounts: list[AccountSummary]
    templates: list[TemplateSummary]
    draft: Draft


def compose_form(
    session: Session, org_id: int, *, reply_to: int | None = None, applicant_id: int | None = None
) -> ComposeForm:
    """The choices and the draft for organisation ``org_id``'s compose page: a reply to email
    ``reply_to``, a message to applicant ``applicant_id``, else blank."""
    accounts = list_accounts(session, org_id)
    if reply_to is not None:
        draft = _reply(session, org_id, reply_to, accounts)
    elif applicant_id is not None:
        draft = _to_applicant(session, org_id, applicant_id)
    else:
        draft = Draft()
    if draft.account_id is None and accounts:
        draft = replace(draft, account_id=accounts[0].id)
    return ComposeForm(accounts, list_templates(session, org_id), draft)


def _reply(session: Session, org_id: int, email_id: int, accounts: list[AccountSummary]) -> Draft:
    email = session.get(Email, email_id)
    if email is None or email.org_id != org_id:
        raise NothingToAnswer(f"No message with id {email_id}.", "reply_to")
    holders = set(
        session.scalars(
            select(MessageCopy.account_id)
            .join(MailAccount, MailAccount.id == MessageCopy.account_id)
            .where(MessageCopy.email_id == email.id, MailAccount.org_id == org_id)
        )
    )
    account_id = next((a.id for a in accounts if a.id in holders), None)
    ours = {normalise_address(a.email) for a in accounts}
    sender = normalise_address(email.from_addr or "")
    if sender and sender in ours:  # a message we sent: answer its recipients again
        to = tuple(a for a in email.to_addrs or () if normalise_address(a) not in ours)
        cc = tuple(a for a in email.cc_addrs or () if normalise_address(a) not in ours)
    else:
        reply_address = session.scalar(
            select(Participant.address).where(Participant.email_id == email.id, Participant.role == "reply-to")
        )
        to, cc = tuple(a for a in (reply_address or email.from_addr,) if a), ()
    applicant = session.scalar(
        select(HistoryEntry.applicant_id)
        .join(Applicant, Applicant.id == HistoryEntry.applicant_id)
        .where(HistoryEntry.email_id == email.id, Applicant.org_id == org_id)
        .order_by(HistoryEntry.applicant_id)
        .limit(1)
    )
    subject = email.subject or ""
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}".rstrip()
    who = email.from_name or email.from_addr or "someone"
    return Draft(account_id, to, cc, subject, email.message_id, applicant, f"a reply to {who}: {email.subject!r}")


def _to_applicant(session: Session, org_id: int, applicant_id: int) -> Draft:
    applicant = session.get(Applicant, applicant_id)
    if applicant is None or applicant.org_id != org_id:
        raise NothingToAnswer(f"No applicant with id {applicant_id}.", "applicant")
    first = session.scalar(
        select(ApplicantAddress.address)
        .where(ApplicantAddress.applicant_id == applicant.id)
        .order_by(ApplicantAddress.id)
        .limit(1)
    )
    return Draft(to=(first,) if first else (), applicant_id=applicant.id, about=f"a message to {applicant.name}")
