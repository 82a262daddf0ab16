"""The IMAP/SMTP connect form's settings guess, under this installation's trust and reach.

:func:`services.mail_settings.guess_settings` does the guessing; this module gives it what the
configuration says, so the guess sees the servers the way the account will once it is saved:

* ``imap.ca_file``: the probes trust the same extra CA certificates as the account
  (:func:`services.accounts.add_imap_account` stores that file with it), so a server with a
  certificate from a private CA answers the guess as it will answer the sync;
* ``web.settings_guess_autoconfig``: an autoconfig document read before the domain's own places
  (``{domain}`` and ``{address}`` filled in) — for development and tests, a local server
  describing a test mail server, which no public source knows;
* ``web.settings_guess_private``: the guess may reach private and loopback addresses (a mail
  server on the local network). Off by default: the form runs for any signed-in user, from
  Postroom's own network, and must not become a way to probe it.

>>> guess_imap_settings(config, "ann@example.com").as_json()["source"]  # doctest: +SKIP
'autoconfig'
"""

from __future__ import annotations

import ssl
from urllib.parse import quote

from postroom.config import Config
from services.mail_settings import SettingsGuess, SocketProber, default_autoconfig_urls, guess_settings

__all__ = ["guess_imap_settings"]

PROBE_TIMEOUT = 3.0  # seconds for each lookup and probe
DEADLINE = 10.0  # seconds for the whole guess: the user is waiting on the form


def guess_imap_settings(config: Config, address: str) -> SettingsGuess:
    """The servers for ``address``, for the user to confirm (see the module docstring). Network
    failures never raise; a malformed address is a :class:`services.mail_settings.MailSettingsError`
    naming the field ``email``."""
    private = config.web.settings_guess_private
    context = ssl.create_default_context(cafile=config.imap.ca_file) if config.imap.ca_file else None
    prober = SocketProber(ssl_context=context, timeout=PROBE_TIMEOUT, allow_private=private)
    extra = config.web.settings_guess_autoconfig

    def autoconfig_urls(domain: str, address: str) -> list[str]:
        first = [extra.replace("{domain}", quote(domain)).replace("{address}", quote(address, safe="@"))]
        return (first if extra else []) + default_autoconfig_urls(domain, address)

    return guess_settings(
        address,
        probe=prober,
        timeout=PROBE_TIMEOUT,
        deadline=DEADLINE,
        autoconfig_urls=autoconfig_urls,
        allow_private=private,
    )
