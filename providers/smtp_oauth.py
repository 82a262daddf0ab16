"""Tracked sends over a cloud service's SMTP submission with OAuth (XOAUTH2), for Gmail and Graph.

The Gmail API and Graph ``sendMail`` take the recipients from the message's headers. A tracked
send gives every recipient a copy with the same To and Cc, so it needs an SMTP envelope: one
transaction per recipient, ``RCPT TO`` that one address. Both services offer SMTP submission
with OAuth, each behind a broader permission, so it is an opt-in per account:

========  ==========================  ========================================  =====================
backend   default endpoint            scope the access token needs              the service files
========  ==========================  ========================================  =====================
gmail     smtp.gmail.com:587 STARTTLS ``https://mail.google.com/``              a copy in SENT
graph     smtp.office365.com:587      ``https://outlook.office.com/SMTP.Send``  a copy in Sent Items
========  ==========================  ========================================  =====================

Account options (``ProviderSettings.options``), the same for both backends::

    smtp_submission      True: send_without_copy goes over SMTP (default False: the API, as before)
    smtp_host, smtp_port, smtp_security   from [google] / [microsoft] (options_with_config)
    smtp_copy_wait       seconds to look for the copy the service filed in Sent (default 8)

:class:`OAuthSubmission` submits with :func:`providers.smtp.send_message`, so SMTP failures
become :class:`SendError`, :class:`SendUncertain` and :class:`TransientError` exactly as for an
IMAP account. A refused sign-in is tried once more with a freshly refreshed token (the stored
one may have run out early), then becomes an :class:`AuthError` that says to reconnect with
the broader scope. After the server accepted the message nothing is raised any more: the
copy the service filed in Sent is looked up by Message-ID and removed, and if that fails the
result says a copy stays (``sent_copy_stored=True``)::

    >>> submission = OAuthSubmission(endpoint, address="rita@example.com", where="Gmail rita@example.com",
    ...                              token=token_source, hint="reconnect ...", timeout=30.0)  # doctest: +SKIP
    >>> result = submission.submit(outgoing)                                     # doctest: +SKIP
    >>> submission.remove_filed_copy(outgoing.message_id, provider.find_sent, remove)   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable, Mapping
from typing import Any

from postroom.urls import is_loopback_host
from providers.base import Credentials, OutgoingMessage, SendResult
from providers.errors import AuthError, ConfigurationError, ProviderError
from providers.smtp import SmtpFactory, connect_smtp, send_message
from providers.transport import Endpoint, check_endpoint

log = logging.getLogger(__name__)

DEFAULT_COPY_WAIT = 8.0  # seconds: Gmail files at once; Exchange Online within a second or two
FIRST_LOOK = 0.25  # the first wait before looking again, doubling
TokenSource = Callable[[bool], str]  # token(fresh) -> an access token for the SMTP server


def submission_endpoint(
    options: Mapping[str, Any], *, default_host: str, ca_file: str | None, what: str
) -> Endpoint | None:
    """The SMTP endpoint of an account with ``smtp_submission`` on, checked (plain text only to
    this machine: :class:`~providers.errors.ConfigurationError`); None when it is off.

    >>> submission_endpoint({"smtp_submission": True}, default_host="smtp.gmail.com", ca_file=None, what="Gmail SMTP")
    Endpoint(host='smtp.gmail.com', port=587, security='starttls', ca_file=None, proxy=None)
    >>> submission_endpoint({}, default_host="smtp.gmail.com", ca_file=None, what="Gmail SMTP") is None
    True
    """
    if not options.get("smtp_submission"):
        return None
    security = str(options.get("smtp_security") or "starttls").lower()
    port = int(options.get("smtp_port") or (465 if security == "ssl" else 587))
    endpoint = Endpoint(str(options.get("smtp_host") or default_host), port, security, ca_file)
    if security == "none" and not is_loopback_host(endpoint.host):
        raise ConfigurationError(
            f"{what}: refusing to send the OAuth token unencrypted to {endpoint.host}; "
            "smtp_security must be starttls or ssl (none only for this machine)."
        )
    check_endpoint(endpoint, False, what)
    return endpoint


class OAuthSubmission:
    """One account's SMTP submission with XOAUTH2 (see the module docstring)."""

    @classmethod
    def for_account(
        cls,
        options: Mapping[str, Any],
        *,
        default_host: str,
        ca_file: str | None,
        what: str,
        address: str,
        where: str,
        token: TokenSource,
        hint: str,
        timeout: float,
        factory: SmtpFactory | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> OAuthSubmission | None:
        """The submission of an account whose options turn ``smtp_submission`` on (its endpoint
        from :func:`submission_endpoint`, ``smtp_copy_wait`` from the options); None when off."""
        endpoint = submission_endpoint(options, default_host=default_host, ca_file=ca_file, what=what)
        if endpoint is None:
            return None
        return cls(
            endpoint,
            address=address,
            where=where,
            token=token,
            hint=hint,
            timeout=timeout,
            factory=factory or connect_smtp,
            sleep=sleep,
            copy_wait=float(options.get("smtp_copy_wait", DEFAULT_COPY_WAIT)),
        )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        address: str,
        where: str,
        token: TokenSource,
        hint: str,
        timeout: float,
        factory: SmtpFactory = connect_smtp,
        sleep: Callable[[float], None] = time.sleep,
        copy_wait: float = DEFAULT_COPY_WAIT,
    ) -> None:
        self.endpoint = endpoint
        self._address, self._where, self._token, self._hint = address, where, token, hint
        self._timeout, self._factory, self._sleep, self._copy_wait = timeout, factory, sleep, max(0.0, copy_wait)

    def submit(self, message: OutgoingMessage) -> SendResult:
        """One SMTP transaction to exactly ``message.recipients``; ``sent_copy_stored`` False.

        A refused sign-in happens before ``MAIL FROM``, so trying once more with a fresh token
        cannot send the message twice."""
        token = self._token(False)  # a refused grant is the token source's AuthError, as for the API
        try:
            return self._send(message, token)
        except AuthError:
            pass  # the token may have run out or been revoked early: a fresh one, once
        token = self._token(True)
        try:
            return self._send(message, token)
        except AuthError as exc:
            cause = exc.__cause__
            reply = _reply(cause) if isinstance(cause, smtplib.SMTPResponseException) else str(exc)
            raise AuthError(
                f"{self._where}: {self.endpoint.host} refused the SMTP sign-in ({reply}); {self._hint}."
            ) from exc

    def _send(self, message: OutgoingMessage, token: str) -> SendResult:
        credentials = Credentials(self._address, access_token=token, oauth_mechanism="XOAUTH2")
        return send_message(self.endpoint, credentials, message, self._timeout, factory=self._factory)

    def remove_filed_copy(
        self, message_id: str, find: Callable[[str], str | None], remove: Callable[[str], None]
    ) -> bool:
        """Look for the copy the service filed in Sent (``find``: its remote id or None) and
        ``remove`` it; looks again for up to ``smtp_copy_wait`` seconds while it is not there
        yet. True when it was removed; False (logged, never raised: the message went out) when
        it did not show up or could not be removed."""
        waited, delay = 0.0, FIRST_LOOK
        while True:
            try:
                found = find(message_id)
                if found is not None:
                    remove(found)
                    return True
            except ProviderError as exc:
                log.warning("%s: the copy of %s filed in Sent stays: %s", self._where, message_id, exc)
                return False
            if waited >= self._copy_wait:
                log.warning(
                    "%s: no copy of %s showed up in Sent within %.0f s; if one comes later, it stays",
                    self._where,
                    message_id,
                    self._copy_wait,
                )
                return False
            step = min(delay, self._copy_wait - waited)
            self._sleep(step)
            waited, delay = waited + step, delay * 2


def _reply(exc: smtplib.SMTPResponseException) -> str:
    """The code and first sentence of a (multi-line) SMTP reply, to quote inside a sentence of ours.

    >>> _reply(smtplib.SMTPAuthenticationError(535, b"5.7.8 Username and Password not accepted. For more\\n5.7.8 x"))
    '535 5.7.8 Username and Password not accepted'
    """
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{exc.smtp_code} {text.split('. ', 1)[0].rstrip('.')}".strip()
