"""What a processing mailbox asks of Microsoft Graph (for :class:`providers.graph.GraphProvider`):
mail folders found by path or created, a folder's message ids, a message found by Message-ID.

A processing mailbox names folders as a person does: ``"INBOX"``, ``"processed"``,
``"Inbound/failed"`` (``/`` separates levels). :class:`Folders` resolves such a name to what
Graph takes in a URL: a well-known folder name as it is (``inbox``; Graph reads them without
regard to case), otherwise the id of the folder found level by level by ``displayName``
(case-insensitive, as Exchange compares folder names) from the top of the mailbox
(``/me/mailFolders``, then ``childFolders``); a name that is no folder's path is tried as a
folder id. A missing folder is created where it belongs (``POST /me/mailFolders`` at the top,
``POST /me/mailFolders/{id}/childFolders`` below); a 409 ``ErrorFolderExists`` (made meanwhile
by someone else) is taken as success and the level listed again.

Listing is ``GET /me/mailFolders/{id}/messages?$select=id`` page by page (``@odata.nextLink``);
finding is the same with ``$filter=internetMessageId eq '...'``. Graph item ids are never reused,
so a listing's validity is a constant (:data:`VALIDITY`); a moved message gets a new id in its
new folder, which does not matter here: it has left the folder the ids were listed from.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from providers.base import FolderListing, RemoteFolder
from providers.errors import FolderNotFound, ProtocolError
from providers.graph_calls import GraphCalls

VALIDITY = 1  # Graph ids are never reused in a mailbox
WELL_KNOWN = frozenset(
    {"inbox", "sentitems", "deleteditems", "drafts", "junkemail", "archive", "outbox", "msgfolderroot"}
)
PAGE = 250


class Folders:
    """Folder paths to Graph folder ids for one provider (cached until the provider closes)."""

    def __init__(self, api: GraphCalls, where: str) -> None:
        self._api, self._where = api, where
        self._ids: dict[str, str] = {}  # path (casefolded) -> id

    def url_key(self, folder: RemoteFolder) -> str:
        """What names ``folder`` in a URL; :class:`FolderNotFound` when there is no such folder."""
        name = folder.name
        if name.lower() in WELL_KNOWN:
            return name.lower()
        found = self._find(name)
        if found is not None:
            return found
        if "/" not in name:  # an id, as list_folders and ensure_folder name folders
            try:
                self._api.json("GET", f"/me/mailFolders/{quote(name)}?$select=id", "mailFolders.get",
                               not_found=FolderNotFound)  # fmt: skip
            except FolderNotFound:
                pass
            else:
                return name
        raise FolderNotFound(f"{self._where}: there is no mail folder {name!r}")

    def _find(self, path: str, *, create: bool = False) -> str | None:
        key = path.casefold()
        if key in self._ids:
            return self._ids[key]
        parent: str | None = None
        for depth, part in enumerate(p for p in path.split("/") if p):
            child = self._child(parent, part)
            if child is None and create:
                child = self._create(parent, part)
            if child is None:
                return None
            parent = child
            self._ids["/".join(path.split("/")[: depth + 1]).casefold()] = child
        return parent

    def _child(self, parent: str | None, name: str) -> str | None:
        url = "/me/mailFolders" if parent is None else f"/me/mailFolders/{quote(parent)}/childFolders"
        page: dict[str, Any] = self._api.json("GET", f"{url}?$top={PAGE}", "mailFolders.list", not_found=FolderNotFound)
        while True:
            for entry in page.get("value", []):
                if str(entry.get("displayName", "")).casefold() == name.casefold():
                    return str(entry["id"])
            if not page.get("@odata.nextLink"):
                return None
            page = self._api.json("GET", page["@odata.nextLink"], "mailFolders.list")

    def _create(self, parent: str | None, name: str) -> str:
        url = "/me/mailFolders" if parent is None else f"/me/mailFolders/{quote(parent)}/childFolders"
        try:
            created = self._api.json("POST", url, "mailFolders.create", json={"displayName": name})
        except ProtocolError as exc:
            if "ErrorFolderExists" not in str(exc) and " 409 " not in str(exc):
                raise
            again = self._child(parent, name)  # created meanwhile by someone else
            if again is None:
                raise
            return again
        return str(created["id"])

    def ensure(self, path: str) -> RemoteFolder:
        """The folder at ``path`` (a well-known name, or display names joined by ``/``), created
        level by level where missing; named by its Graph id."""
        if path.lower() in WELL_KNOWN:
            answer = self._api.json("GET", f"/me/mailFolders/{path.lower()}?$select=id", "mailFolders.get")
            return RemoteFolder(str(answer["id"]))
        found = self._find(path, create=True)
        if found is None:
            raise ProtocolError(f"{self._where}: {path!r} is not a folder path")
        return RemoteFolder(found)

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """Every message id in ``folder``, in the order Graph lists them."""
        return FolderListing(VALIDITY, tuple(self._messages(folder, "$select=id&$top=100")))

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """A message in ``folder`` whose ``internetMessageId`` is ``message_id`` (quotes doubled)."""
        literal = message_id.replace("'", "''")
        query = "$filter=" + quote(f"internetMessageId eq '{literal}'", safe="") + "&$select=id&$top=10"
        return next(iter(self._messages(folder, query)), None)

    def _messages(self, folder: RemoteFolder, query: str) -> list[str]:
        url = f"/me/mailFolders/{quote(self.url_key(folder))}/messages?{query}"
        ids: list[str] = []
        while url:
            page = self._api.json("GET", url, "messages.list", not_found=FolderNotFound)
            ids.extend(str(m["id"]) for m in page.get("value", []))
            url = page.get("@odata.nextLink") or ""
        return ids
