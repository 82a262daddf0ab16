"""What a processing mailbox asks of Exchange over EWS (for :class:`providers.ews.EwsProvider`):
folders found by path or created, a folder's item ids, an item found by Message-ID.

A processing mailbox names folders as a person does: ``"INBOX"``, ``"processed"``,
``"Inbound/failed"`` (``/`` separates levels). :class:`Folders` resolves such a name: a
distinguished folder name (``inbox``, ``sentitems``, ... without regard to case) is sent as a
``DistinguishedFolderId``; any other is found level by level by display name (case-insensitive,
as Exchange compares folder names) from the top of the message store (``msgfolderroot``) in one
``SyncFolderHierarchy``; a name that is no folder's path is taken as a folder id if one has it.
A missing folder is created with ``CreateFolder`` (class ``IPF.Note``) under its parent; an
``ErrorFolderExists`` answer (made meanwhile by someone else) is taken as success.

Listing is ``FindItem`` (Shallow, ``IdOnly``, paged); finding is the same restricted to
``message:InternetMessageId``. Exchange item ids are never reused, so a listing's validity is a
constant (:data:`VALIDITY`); ``MoveItem`` gives the moved item a new id in the target folder,
which does not matter here: it has left the folder the ids were listed from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from exchangelib import Account
from exchangelib import errors as ews_errors
from exchangelib.folders import Folder, Inbox, MsgFolderRoot, Root
from exchangelib.properties import DistinguishedFolderId, FolderId, Mailbox
from exchangelib.restriction import Q, Restriction
from exchangelib.services import CreateFolder, FindItem, GetFolder, SyncFolderHierarchy

from providers import ews_codec
from providers.base import FolderListing, RemoteFolder
from providers.errors import FolderNotFound

VALIDITY = 1  # Exchange item ids are never reused in a mailbox
DISTINGUISHED = frozenset({"inbox", "sentitems", "deleteditems", "drafts", "junkemail", "msgfolderroot", "archive"})
PAGE = 1000
Translate = Callable[[str], AbstractContextManager[None]]


class Folders:
    """Folder paths to EWS folder ids for one provider (cached until the provider closes)."""

    def __init__(self, account: Callable[[], Account], translate: Translate, where: str) -> None:
        self._account, self._translate, self._where = account, translate, where
        self._tree: dict[str, tuple[str | None, str]] | None = None  # folder id -> (parent id, name)
        self._top: str | None = None

    # ------------------------------------------------------------ resolving
    def _read(self) -> dict[str, tuple[str | None, str]]:
        acc = self._account()
        root = Root(account=acc)
        with self._translate("GetFolder"):
            (top,) = GetFolder(account=acc).call(
                folders=[MsgFolderRoot(root=root)], additional_fields=set(), shape="IdOnly"
            )
            if isinstance(top, Exception):
                raise top
        with self._translate("SyncFolderHierarchy"):
            paths = {ews_codec.FieldPath(field=root.get_field_by_fieldname(n)) for n in ("name", "parent_folder_id")}
            found = SyncFolderHierarchy(account=acc).call(
                folder=root, shape="IdOnly", additional_fields=paths, sync_state=None
            )
            tree = {f.id: (getattr(f.parent_folder_id, "id", None), str(f.name or "")) for _, f in found}
        self._top, self._tree = top.id, tree
        return tree

    def _find(self, path: str, *, fresh: bool = False) -> str | None:
        tree = self._read() if fresh or self._tree is None else self._tree
        parent = self._top
        for part in (p for p in path.split("/") if p):
            wanted = part.casefold()
            child = next(
                (fid for fid, (pid, name) in tree.items() if pid == parent and name.casefold() == wanted), None
            )
            if child is None:
                return None
            parent = child
        return parent

    def ref(self, folder: RemoteFolder) -> Any:
        """What names ``folder`` in a request: a DistinguishedFolderId or a FolderId;
        :class:`FolderNotFound` when there is no such folder."""
        name = folder.name
        if name.lower() in DISTINGUISHED:
            mailbox = Mailbox(email_address=self._account().primary_smtp_address)
            return DistinguishedFolderId(id=name.lower(), mailbox=mailbox)
        for fresh in (False, True):
            found = self._find(name, fresh=fresh)
            tree = self._tree or {}
            if found is None and name in tree:
                found = name  # a folder id, as list_folders and ensure_folder name folders
            if found is not None:
                return FolderId(id=found)
        raise FolderNotFound(f"{self._where}: there is no mail folder {name!r}")

    # ------------------------------------------------------------ creating
    def ensure(self, path: str) -> RemoteFolder:
        """The folder at ``path``, created level by level where missing; named by its id."""
        if path.lower() in DISTINGUISHED:
            path = path.lower()
        parts = [p for p in path.split("/") if p]
        if len(parts) == 1 and parts[0] in DISTINGUISHED:  # an existing folder, named by its id
            return self._distinguished_id(parts[0])
        self._read()
        parent = self._top
        for depth in range(len(parts)):
            found = self._find("/".join(parts[: depth + 1]))
            if found is None:
                found = self._create(parent, parts[depth])
            parent = found
        assert parent is not None
        return RemoteFolder(parent)

    def _distinguished_id(self, name: str) -> RemoteFolder:
        acc = self._account()
        folder = DistinguishedFolderId(id=name, mailbox=Mailbox(email_address=acc.primary_smtp_address))
        with self._translate("GetFolder"):
            (found,) = GetFolder(account=acc).call(folders=[folder], additional_fields=set(), shape="IdOnly")
            if isinstance(found, Exception):
                raise found
        return RemoteFolder(found.id)

    def _create(self, parent: str | None, name: str) -> str:
        acc = self._account()
        new = Folder(root=Root(account=acc), name=name, folder_class="IPF.Note")
        with self._translate("CreateFolder"):
            (made,) = CreateFolder(account=acc).call(parent_folder=FolderId(id=parent), folders=[new])
            if isinstance(made, ews_errors.ErrorFolderExists):
                self._read()  # created meanwhile by someone else
                again = next(
                    (f for f, (p, n) in (self._tree or {}).items() if p == parent and n.casefold() == name.casefold()),
                    None,
                )
                if again is None:
                    raise made
                return again
            if isinstance(made, Exception):
                raise made
        assert self._tree is not None
        self._tree[made.id] = (parent, name)
        return str(made.id)

    # ------------------------------------------------------------ items
    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """Every item id in ``folder`` (FindItem, Shallow, IdOnly, paged)."""
        return FolderListing(VALIDITY, tuple(self._items(folder, None, None)))

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """An item in ``folder`` whose InternetMessageId is ``message_id``, or None."""
        return next(self._items(folder, message_id, 10), None)

    def _items(self, folder: RemoteFolder, message_id: str | None, limit: int | None) -> Iterator[str]:
        acc = self._account()
        where = self.ref(folder)
        restriction = None
        if message_id is not None:  # a mail folder only resolves the restriction's field name
            mail = Inbox(root=Root(account=acc))
            restriction = Restriction(Q(message_id=message_id), folders=[mail], applies_to=Restriction.ITEMS)
        with self._translate("FindItem"):
            found = FindItem(account=acc, page_size=min(limit or PAGE, PAGE)).call(
                folders=[where],
                additional_fields=None,
                restriction=restriction,
                order_fields=None,
                shape="IdOnly",
                query_string=None,
                depth="Shallow",
                calendar_view=None,
                max_items=limit,
                offset=0,
            )
            for item in found:
                if isinstance(item, ews_errors.ErrorFolderNotFound):
                    raise FolderNotFound(f"{self._where}: the mail folder {folder.name!r} is gone")
                if isinstance(item, Exception):
                    raise item
                yield str(item[0])


def _child(tree: dict[str, tuple[str | None, str]], parent: str | None, name: str) -> str | None:
    """The id of ``parent``'s folder called ``name`` (case aside), or None."""
    wanted = name.casefold()
    return next((fid for fid, (pid, fname) in tree.items() if pid == parent and fname.casefold() == wanted), None)
