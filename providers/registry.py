"""Explicit registry of provider backends, loaded lazily by ``"module:Class"`` path.

No module scanning and no registration by import side effects: a backend is
listed here, and its module is imported only when an account of that kind is
opened. What is listed is a :class:`providers.base.ProviderFactory`: ``open(settings)``
and ``options_with_config(options, credentials, config)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from providers.base import MailProvider, ProviderFactory, ProviderSettings
from providers.errors import BackendNotFound

if TYPE_CHECKING:  # mypy checks each listed class against the protocols; nothing is imported at run time
    from providers.ews import EwsProvider
    from providers.gmail import GmailProvider
    from providers.graph import GraphProvider
    from providers.imap import ImapProvider

    _CHECKED: tuple[ProviderFactory, ...] = (ImapProvider, GmailProvider, GraphProvider, EwsProvider)

IMAP, GMAIL, GRAPH, EWS = "imap", "gmail", "graph", "ews"  # the names accounts store
BACKENDS: dict[str, str] = {
    IMAP: "providers.imap:ImapProvider",
    GMAIL: "providers.gmail:GmailProvider",
    GRAPH: "providers.graph:GraphProvider",
    EWS: "providers.ews:EwsProvider",
}


def backend_class(name: str) -> ProviderFactory:
    """The factory (backend class) registered for ``name``; :class:`BackendNotFound` names the known ones."""
    try:
        path = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise BackendNotFound(f"Unknown mail backend {name!r}; known backends: {known}.") from None
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendNotFound(f"Mail backend {name!r} needs the package {exc.name!r}, which is not installed.") from exc
    factory: ProviderFactory = getattr(module, attr)
    return factory


def open_provider(name: str, settings: ProviderSettings) -> MailProvider:
    """Build a connected-on-demand provider for one account."""
    return backend_class(name).open(settings)
