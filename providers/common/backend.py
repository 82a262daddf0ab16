"""What every backend class does the same way (:class:`Backend`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from providers.base import Credentials, FolderListing, ProviderSettings, RemoteFolder
from providers.errors import ConfigurationError, NotSupported

if TYPE_CHECKING:
    from postroom.config import Config


class Backend:
    """A base for backend classes (they need not use it: the registry asks only for
    :class:`providers.base.ProviderFactory`).

    ``open`` builds the provider, which checks its settings and sends nothing until the
    first call; the provider is a context manager that closes itself; and
    :meth:`options_with_config` takes nothing from the Postroom config unless the backend
    overrides it. What a processing mailbox needs (:meth:`list_ids`, :meth:`ensure_folder`,
    :meth:`find_message`) raises :class:`~providers.errors.NotSupported` unless the backend
    implements it and says so with ``supports_inbound``.
    """

    supports_inbound = False  # list_ids, ensure_folder and find_message work: a processing mailbox may use it

    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings

    @classmethod
    def open(cls, settings: ProviderSettings, **kwargs: Any) -> Self:
        """Validate the settings (:class:`~providers.errors.ConfigurationError`); nothing is sent yet."""
        return cls(settings, **kwargs)

    @classmethod
    def options_with_config(
        cls, options: Mapping[str, Any], credentials: Credentials, config: Config
    ) -> dict[str, Any]:
        """The account's ``options``, plus what this backend takes from ``config``: nothing here."""
        return dict(options)

    def _not_supported(self) -> NotSupported:
        name = type(self).__name__.removesuffix("Provider")
        return NotSupported(f"the {name} backend cannot serve as a processing mailbox (not supported by this backend)")

    def list_ids(self, folder: RemoteFolder) -> FolderListing:
        """Not supported by this backend (:class:`~providers.errors.NotSupported`)."""
        raise self._not_supported()

    def ensure_folder(self, name: str) -> RemoteFolder:
        """Not supported by this backend (:class:`~providers.errors.NotSupported`)."""
        raise self._not_supported()

    def find_message(self, folder: RemoteFolder, message_id: str) -> str | None:
        """Not supported by this backend (:class:`~providers.errors.NotSupported`)."""
        raise self._not_supported()

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_oauth(settings: ProviderSettings, *, no_grant: str, no_client: str) -> None:
    """Refuse OAuth settings that cannot work (:class:`ConfigurationError` with the backend's
    own words): no token at all (``no_grant``), or a refresh token without the id and secret
    of the OAuth client it was issued to (``no_client``). An access token alone is used until
    it is refused."""
    opts, creds = settings.options, settings.credentials
    if not creds.refresh_token and not creds.access_token:
        raise ConfigurationError(no_grant)
    if creds.refresh_token and not (opts.get("client_id") and opts.get("client_secret")):
        raise ConfigurationError(no_client)
