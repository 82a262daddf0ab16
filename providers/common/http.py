"""requests for the HTTP backends and the Microsoft sign-in: msal's HTTP client, and whether
a failed request may have reached the server."""

from __future__ import annotations

from typing import Any

import requests
from urllib3.exceptions import NewConnectionError


class MsalHttp:
    """msal's ``http_client``: a requests session with the CA bundle passed on every request.

    ``REQUESTS_CA_BUNDLE`` in the environment (set on many machines) would otherwise win over
    ``Session.verify``. Used for token refreshes (:mod:`providers.microsoft_tokens`) and the
    web app's Microsoft consent flow. ``verify`` None leaves requests' own choice; the
    session belongs to the caller, who closes it.
    """

    def __init__(self, session: requests.Session, verify: str | bool | None, timeout: float) -> None:
        self._session, self._verify, self._timeout = session, verify, timeout

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("timeout", self._timeout)
        if self._verify is not None:
            kwargs["verify"] = self._verify
        return kwargs

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.get(url, **self._kwargs(kwargs))

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._session.post(url, **self._kwargs(kwargs))

    def close(self) -> None:  # the owner closes the session
        pass


def request_may_have_arrived(exc: BaseException) -> bool:
    """Whether a ``requests`` failure may have come after the server received the request.

    Failing to connect (refused, unresolvable, connect timeout, TLS handshake) is before:
    nothing was sent. A read timeout or a connection dropped while waiting for the answer
    is after: the server may have acted on it. ``exc`` may also be an exception whose
    ``__context__`` is the ``requests`` error (exchangelib re-raises them that way).

    >>> request_may_have_arrived(requests.exceptions.ConnectTimeout("connect timed out"))
    False
    >>> request_may_have_arrived(requests.exceptions.ReadTimeout("read timed out"))
    True
    """
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes is short; never follow a cycle
        if seen is None or isinstance(seen, requests.RequestException):
            break
        seen = seen.__cause__ or seen.__context__
    if not isinstance(seen, requests.RequestException):
        seen = None
    if seen is None:
        return True  # not a transport error we can place: assume the worst
    if isinstance(seen, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return False
    if isinstance(seen, requests.exceptions.ConnectionError):
        reason = seen.args[0] if seen.args else None
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
        return not isinstance(reason, NewConnectionError)
    return not isinstance(seen, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema)
