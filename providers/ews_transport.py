"""How EWS calls travel and fail, for :class:`providers.ews.EwsProvider`: the HTTP adapter
exchangelib uses (a CA bundle per endpoint, responses read 64 KiB at a time), exchangelib
and requests errors as :mod:`providers.errors` (:func:`translate`), and whether a failed
send may have gone out (:func:`may_have_sent`).

Errors: ``ErrorServerBusy`` is a :class:`~providers.errors.TransientError` whose
``retry_after`` is BackOffMilliseconds (capped); ``ErrorInvalidSyncStateData`` a
:class:`~providers.errors.CursorInvalidError`; ``ErrorFolderNotFound`` a
:class:`~providers.errors.FolderNotFound`; refused credentials, access denied or no mailbox
an :class:`~providers.errors.AuthError`; throttling, timeouts, an unavailable mailbox store
and dropped connections a :class:`~providers.errors.TransientError`; any other EWS or HTTP
error a :class:`~providers.errors.ProtocolError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from exchangelib import errors as ews_errors
from exchangelib.protocol import BaseProtocol

from providers.common.http import request_may_have_arrived
from providers.errors import (
    AuthError,
    CursorInvalidError,
    FolderNotFound,
    ProtocolError,
    ProviderError,
    TransientError,
)

TRANSIENT = (
    ews_errors.ErrorServerBusy,
    ews_errors.RateLimitError,
    ews_errors.ErrorInternalServerTransientError,
    ews_errors.ErrorTimeoutExpired,
    ews_errors.ErrorMailboxStoreUnavailable,
    ews_errors.ErrorMailboxMoveInProgress,
    ews_errors.ErrorTooManyObjectsOpened,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


class _ChunkedResponse(requests.Response):
    """exchangelib parses every SOAP answer from ``iter_content()``, whose default chunk is
    one byte: reading 64 KiB at a time makes parsing several times cheaper (measured
    184 → 14 ns per byte; seconds of CPU on a 10,000-message initial sync)."""

    def iter_content(self, chunk_size: int | None = 65536, decode_unicode: bool = False) -> Any:  # type: ignore[override]
        return super().iter_content(chunk_size, decode_unicode)  # type: ignore[call-overload]


class EndpointTrustAdapter(requests.adapters.HTTPAdapter):
    """exchangelib's HTTP adapter here: trusts a configured CA bundle for the endpoints
    that asked for one, and hands out responses that stream in 64 KiB chunks.

    exchangelib builds its own requests sessions and posts without ``verify=``, so
    ``REQUESTS_CA_BUNDLE`` (set on many machines) would override any ``Session.verify``;
    the adapter is the one place that sees every request. exchangelib takes the adapter
    class from the class attribute ``BaseProtocol.HTTP_ADAPTER_CLS`` (process-wide), so it
    is installed once, when the first EWS provider is built; for endpoints without a CA
    file it verifies exactly as requests does.
    """

    bundles: dict[str, str] = {}  # "https://host:port" -> PEM path
    _lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if BaseProtocol.HTTP_ADAPTER_CLS is not cls:
                BaseProtocol.HTTP_ADAPTER_CLS = cls

    @classmethod
    def trust(cls, endpoint: str, ca_file: str) -> None:
        with cls._lock:
            cls.bundles[_origin(endpoint)] = ca_file
        cls.install()

    def _verify(self, url: str, verify: Any) -> Any:
        return self.bundles.get(_origin(url), verify)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, self._verify(url, verify), cert)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None, cert: Any = None) -> Any:
        return super().get_connection_with_tls_context(request, self._verify(request.url, verify), proxies, cert)

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = _ChunkedResponse
        return response


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].lower()}"


@contextmanager
def translate(who: str, backoff_cap: float) -> Iterator[None]:
    """exchangelib and requests errors raised inside -> :mod:`providers.errors`; ``who`` starts
    each message ("EWS rita@contoso.com GetItem"), ``backoff_cap`` caps an ErrorServerBusy's
    BackOffMilliseconds (seconds)."""
    try:
        yield
    except ProviderError:
        raise
    except ews_errors.ErrorServerBusy as exc:
        wait = exc.back_off if exc.back_off is not None else None
        retry = min(wait, backoff_cap) if wait is not None else None
        raise TransientError(f"{who}: server busy ({exc})", retry_after=retry) from exc
    except ews_errors.ErrorInvalidSyncStateData as exc:
        raise CursorInvalidError(f"{who}: ErrorInvalidSyncStateData: {exc}") from exc
    except ews_errors.ErrorFolderNotFound as exc:
        raise FolderNotFound(f"{who}: {exc}") from exc
    except (ews_errors.UnauthorizedError, ews_errors.ErrorAccessDenied, ews_errors.ErrorNonExistentMailbox) as exc:
        raise AuthError(f"{who}: {exc}") from exc
    except TRANSIENT as exc:
        raise TransientError(f"{who}: {exc}") from exc
    except (ews_errors.EWSError, requests.exceptions.RequestException) as exc:
        raise ProtocolError(f"{who}: {exc.__class__.__name__}: {exc}") from exc


def may_have_sent(exc: BaseException) -> bool:
    """Whether a failed send request may have been acted on: a server error, or a connection
    that failed after the request was written. Throttling (ErrorServerBusy with a back-off)
    and failing to connect are answered before Exchange does anything."""
    if isinstance(exc, ews_errors.ErrorServerBusy):
        # Exchange's own throttling answer comes alone; exchangelib also reports server errors and
        # timeouts as ErrorServerBusy, raised while handling them, and a non-200 answer that
        # closed the connection as "Caused by closed connection"
        if exc.__context__ is not None and exc.__context__ is not exc:
            return may_have_sent(exc.__context__)
        return "closed connection" in str(exc)
    if isinstance(exc, ews_errors.ErrorTimeoutExpired | requests.RequestException):
        return request_may_have_arrived(exc)
    return isinstance(
        exc,
        ews_errors.ErrorInternalServerError
        | ews_errors.ErrorInternalServerTransientError
        | ews_errors.MalformedResponseError,
    )
