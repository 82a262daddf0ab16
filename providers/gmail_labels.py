"""What a processing mailbox asks of Gmail (for :class:`providers.gmail.GmailProvider`): labels
found by name or created, a label's message ids, a message found by Message-ID.

A Gmail "folder" is a label. A processing mailbox names its folders as a person does
(``"INBOX"``, ``"processed"``, ``"Inbound/failed"``); :class:`Labels` resolves such a name to the
label id every call takes: a system label's id is its name (``INBOX``, ``SPAM``, ...), a user
label's is ``Label_<n>``, found by its name case-insensitively (Gmail refuses two labels whose
names differ only in case). A missing one is created with ``labels.create``; a 409 ("Label name
exists or conflicts": another client created it meanwhile) is taken as success and the label
list read again.

Gmail message ids never change and are never reused in a mailbox, so a listing's validity is a
constant (:data:`VALIDITY`). Moving is relabelling (``messages.modify``: add the target, remove
the source): the message keeps its id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from providers.base import FolderListing, RemoteFolder
from providers.errors import FolderNotFound, ProtocolError
from providers.gmail_calls import GmailCalls
from providers.gmail_history import ALL_MAIL, HIDDEN

VALIDITY = 1  # Gmail ids are never reused: a listing's ids are always comparable
SYSTEM = frozenset({"INBOX", "SENT", "TRASH", "SPAM", "DRAFT", "UNREAD", "STARRED", "IMPORTANT", ALL_MAIL})


def is_user_label_id(name: str) -> bool:
    """Whether ``name`` has the shape of a user label's id (``Label_12``), as list_folders names it."""
    return re.fullmatch(r"Label_\d+", name) is not None


class Labels:
    """Label names to ids for one provider, read once and again after a miss or a creation."""

    def __init__(self, api: GmailCalls, where: str) -> None:
        self._api, self._where = api, where
        self._by_id: dict[str, str] | None = None  # label id -> name

    def _read(self) -> dict[str, str]:
        answer = self._api.execute(self._api.labels.list(userId="me"), "labels.list")
        self._by_id = {str(lb["id"]): str(lb.get("name") or lb["id"]) for lb in answer.get("labels", [])}
        return self._by_id

    def find(self, name: str) -> str | None:
        """The id of the label called (or with the id) ``name``, or None."""
        if name in SYSTEM or name.upper() in SYSTEM - {ALL_MAIL}:
            return name.upper()
        for fresh in (False, True):
            by_id = self._read() if fresh or self._by_id is None else self._by_id
            if name in by_id:
                return name
            wanted = name.casefold()
            found = next((lid for lid, lname in by_id.items() if lname.casefold() == wanted), None)
            if found is not None:
                return found
        return None

    def id_of(self, folder: RemoteFolder) -> str:
        """The label id of ``folder`` (named by id or by name); :class:`FolderNotFound` if none."""
        found = self.find(folder.name)
        if found is None:
            raise FolderNotFound(f"{self._where}: there is no label {folder.name!r}")
        return found

    def ensure(self, name: str) -> RemoteFolder:
        """The label called ``name``, created (shown in the label list and on messages) when missing."""
        found = self.find(name)
        if found is None:
            body = {"name": name, "labelListVisibility": "labelShow", "messageListVisibility": "show"}
            try:
                created = self._api.execute(self._api.labels.create(userId="me", body=body), "labels.create")
                found = str(created["id"])
                self._by_id = None
            except ProtocolError as exc:
                if " 409 " not in str(exc):
                    raise
                found = self.find(name)  # created meanwhile by someone else
                if found is None:
                    raise ProtocolError(f"{self._where}: label {name!r} conflicts with another label") from exc
        return RemoteFolder(found)


def list_ids(api: GmailCalls, label: str) -> FolderListing:
    """Every message id with ``label`` (messages.list, 500 a page), oldest first."""
    ids = list(_listing(api, label))
    return FolderListing(VALIDITY, tuple(dict.fromkeys(reversed(ids))))  # Gmail lists newest first


def find_message(api: GmailCalls, label: str, message_id: str) -> str | None:
    """The newest message with ``label`` whose Message-ID is ``message_id`` (``rfc822msgid:``)."""
    return next(_listing(api, label, q=f"rfc822msgid:{message_id}", page=10), None)


def _listing(api: GmailCalls, label: str, *, page: int = 500, **query: Any) -> Iterator[str]:
    labels = {} if label == ALL_MAIL else {"labelIds": [label]}
    request = api.messages.list(userId="me", **labels, includeSpamTrash=label in HIDDEN, maxResults=page, **query)
    while request is not None:
        answer = api.execute(request, "messages.list")
        yield from (str(m["id"]) for m in answer.get("messages", []))
        request = api.messages.list_next(request, answer)
