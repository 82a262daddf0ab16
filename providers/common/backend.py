"""What every backend class does the same way (:class:`Backend`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from providers.base import Credentials, ProviderSettings
from providers.errors import ConfigurationError

if TYPE_CHECKING:
    from postroom.config import Config


class Backend:
    """A base for backend classes (they need not use it: the registry asks only for
    :class:`providers.base.ProviderFactory`).

    ``open`` builds the provider, which checks its settings and sends nothing until the
    first call; the provider is a context manager that closes itself; and
    :meth:`options_with_config` takes nothing from the Postroom config unless the backend
    overrides it.
    """

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
