"""Explicit registry of provider backends, loaded lazily by ``"module:Class"`` path.

No module scanning and no registration by import side effects: a backend is
listed here, and its module is imported only when an account of that kind is
opened. A backend class provides ``open(settings: ProviderSettings)``.
"""

from __future__ import annotations

import importlib

from providers.base import MailProvider, ProviderSettings
from providers.errors import BackendNotFound

BACKENDS: dict[str, str] = {
    "imap": "providers.imap:ImapProvider",
    "gmail": "providers.gmail:GmailProvider",
    "graph": "providers.graph:GraphProvider",
    "ews": "providers.ews:EwsProvider",
}


def backend_class(name: str) -> type:
    """The class registered for ``name``; :class:`BackendNotFound` names the known ones."""
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
    return getattr(module, attr)


def open_provider(name: str, settings: ProviderSettings) -> MailProvider:
    """Build a connected-on-demand provider for one account."""
    return backend_class(name).open(settings)  # type: ignore[attr-defined,no-any-return]
