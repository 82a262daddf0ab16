"""Executing Gmail API calls: retries with quota-aware backoff, batches, error translation.

Every library exception stops here and leaves as a :mod:`providers.errors` class:

==========================================================  =====================================
what Gmail or the network did                               raised
==========================================================  =====================================
refresh answered ``invalid_grant`` / ``invalid_client``;    :class:`AuthError`
401 after the client's own refresh; 403 other than a rate
limit (missing scope, domain policy)
429; 403 ``rateLimitExceeded`` / ``userRateLimitExceeded``;  retried with capped exponential backoff
5xx; connection errors (idempotent calls only)              honouring Retry-After, then
                                                            :class:`TransientError` (``retry_after`` set)
404                                                         the caller's ``not_found`` class
                                                            (batches: the id is left out)
one batch part keeps failing (4xx, or 5xx after every       :class:`ProtocolError` naming the part
retry while the other parts were answered)                  (``remote_id``), so only it is quarantined
400 and anything else                                       :class:`ProtocolError`
==========================================================  =====================================

Backoff for attempt n is ``base * 2**n`` capped at 32 s, or the server's
Retry-After when longer; a call gives up once its total sleep would pass the
budget (:mod:`providers.common.retry`, which also runs the batches). Sends are not
retried on 5xx or connection errors (the message may have gone out); they are on
429/403 rate limits, which Gmail answers before doing anything. A call that is not
safe to repeat (``idempotent=False``: messages.send, messages.insert) raises
:class:`SendUncertain` for a 5xx or for a connection that failed after the request was
written (see :class:`SendOnceHttp`), and :class:`TransientError` for failures before
anything reached Gmail.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache, cached_property
from typing import Any

import google.auth.exceptions
import httplib2
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from providers.common.retry import Backoff, BatchRound, RetryPolicy, run_batch
from providers.errors import AuthError, ProtocolError, ProviderError, SendUncertain, TransientError

RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
MAX_BACKOFF = 32.0


@cache
def _discovery_text() -> str:
    import googleapiclient

    path = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents", "gmail.v1.json")
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def fresh_discovery() -> dict[str, Any]:
    """A private copy of Gmail's discovery document as bundled with google-api-python-client
    (no network), for ``build_from_document``, which writes into it. Parsing the cached text
    is ~2.5x faster than a deepcopy of a parsed one."""
    doc: dict[str, Any] = json.loads(_discovery_text())
    return doc


def build_service(api_root: str, http: Any) -> Any:
    """The Gmail API service over ``http`` with every URL under ``api_root`` (``rootUrl``:
    requests, batches and uploads alike; ``api_endpoint`` alone would leave batches on
    Google's host). Used by the backend and by the web app's Google connect flow."""
    doc = fresh_discovery()
    doc["rootUrl"] = doc["mtlsRootUrl"] = api_root
    return discovery.build_from_document(doc, http=http)


class AnswerLost(httplib2.HttpLib2Error):
    """The request was written in full, then the connection failed before an answer came."""


class SendOnceHttp(httplib2.Http):  # type: ignore[misc]
    """``httplib2.Http`` that can be told to write each request exactly once.

    httplib2 writes a request a second time when the connection fails before the answer
    on the first try (it takes that for a keep-alive connection the server had closed).
    For ``messages.send`` that second write is a second copy of the mail. Inside
    :meth:`single_attempt` each request goes out once, on a fresh connection; a failure
    after it was written raises :class:`AnswerLost`, one before propagates unchanged
    (nothing reached the server, so trying again later is safe).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._single = False

    @contextmanager
    def single_attempt(self) -> Iterator[None]:
        before, self._single = self._single, True
        try:
            yield
        finally:
            self._single = before

    def _conn_request(self, conn: Any, request_uri: str, method: str, body: Any, headers: Any) -> Any:
        if not self._single:
            return super()._conn_request(conn, request_uri, method, body, headers)
        conn.close()  # a fresh connection: a failure cannot be a keep-alive one the server had closed
        written: list[bool] = []
        write = conn.request

        def write_once(*args: Any, **kwargs: Any) -> None:
            if written:
                raise AnswerLost("the connection failed after the request was written; not writing it again")
            write(*args, **kwargs)
            written.append(True)

        conn.request = write_once
        try:
            return super()._conn_request(conn, request_uri, method, body, headers)
        except AnswerLost:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            if not written:
                raise
            conn.close()
            raise AnswerLost(f"the connection failed after the request was written: {exc!r}") from exc
        finally:
            del conn.request


def _reasons(exc: HttpError) -> set[str]:
    details = exc.error_details if isinstance(exc.error_details, list) else []
    return {str(d.get("reason")) for d in details if isinstance(d, dict)}


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class GmailCalls:
    """Runs requests built on ``service`` for one provider (one thread).

    ``users``, ``messages``, ``history`` and ``labels`` are the service's resources,
    built once: google-api-python-client builds every method of a resource from the
    discovery document each time the resource is asked for (``users.messages()``
    costs ~0.7 ms), more than building the request itself.
    """

    def __init__(
        self,
        service: Any,
        http: Any,
        where: str,
        *,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> None:
        self.users = service.users()
        self._service, self._http, self._where = service, http, where
        self._answered = False  # some call of this provider got an answer: the server is up
        self._policy, self._sleep = policy, sleep

    @cached_property
    def messages(self) -> Any:
        return self.users.messages()

    @cached_property
    def history(self) -> Any:
        return self.users.history()

    @cached_property
    def labels(self) -> Any:
        return self.users.labels()

    # ------------------------------------------------------------ errors
    def translate(self, exc: Exception, what: str, not_found: type[ProviderError] = ProtocolError) -> ProviderError:
        """The provider error for a library exception raised by ``what``."""
        if isinstance(exc, HttpError):
            status, reasons = exc.status_code, _reasons(exc)
            text = f"{self._where}: {what} answered {status} {exc.reason}"
            if status == 429 or (status == 403 and reasons & RATE_LIMIT_REASONS) or status >= 500:
                return TransientError(text, retry_after=_retry_after(exc))
            if status in (401, 403):
                return AuthError(text)
            if status == 404:
                return not_found(text)
            return ProtocolError(text)
        if isinstance(exc, google.auth.exceptions.RefreshError):
            if getattr(exc, "retryable", False):
                return TransientError(f"{self._where}: token refresh failed for now: {exc}")
            return AuthError(f"{self._where}: Google refused the grant: {exc}")
        if isinstance(exc, google.auth.exceptions.TransportError | OSError | httplib2.HttpLib2Error):
            return TransientError(f"{self._where}: {what} failed: {exc!r}")
        return ProtocolError(f"{self._where}: {what} failed: {exc!r}")

    def _uncertain(self, exc: Exception, what: str) -> SendUncertain | None:
        """For a call that is not safe to repeat: the error if Gmail may have acted on it."""
        if isinstance(exc, HttpError) and exc.status_code >= 500:
            return SendUncertain(f"{self._where}: {what} answered {exc.status_code} {exc.reason}")
        if isinstance(exc, AnswerLost):
            return SendUncertain(f"{self._where}: {what}: {exc}")
        unguarded = not isinstance(getattr(self._http, "http", None), SendOnceHttp)
        if unguarded and isinstance(exc, OSError | httplib2.HttpLib2Error | google.auth.exceptions.TransportError):
            return SendUncertain(f"{self._where}: {what} failed: {exc!r}")  # cannot tell when it failed
        return None

    # ------------------------------------------------------------ calls
    def execute(
        self,
        request: Any,
        what: str,
        *,
        not_found: type[ProviderError] = ProtocolError,
        idempotent: bool = True,
    ) -> Any:
        """``request.execute()`` with retries; the parsed JSON answer."""
        backoff = Backoff(self._policy, self._sleep)
        while True:
            try:
                if idempotent or not isinstance(getattr(self._http, "http", None), SendOnceHttp):
                    answer = request.execute()
                else:
                    with self._http.http.single_attempt():
                        answer = request.execute()
                self._answered = True
                return answer
            except (HttpError, google.auth.exceptions.GoogleAuthError, OSError, httplib2.HttpLib2Error) as exc:
                uncertain = None if idempotent else self._uncertain(exc, what)
                if uncertain is not None:
                    raise uncertain from exc
                err = self.translate(exc, what, not_found)
                if not backoff.retry(err, idempotent=idempotent, throttled=_rate_limited(exc)):
                    raise err from exc

    def batch(self, requests: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Run ``{key: request}`` as one batch; ``{key: answer}`` without the 404s.

        Parts that fail with a rate limit or a 5xx are retried in a smaller batch
        after the backoff; any other failing part raises its translated error
        (:func:`providers.common.retry.run_batch`).
        """

        def send(keys: list[str]) -> BatchRound:
            round_ = BatchRound()
            outcomes: dict[str, tuple[Any, Exception | None]] = {}
            batch = self._service.new_batch_http_request(callback=_collector(outcomes))
            for i, key in enumerate(keys):
                batch.add(requests[key], request_id=str(i))
            try:
                batch.execute(http=self._http)
            except (HttpError, google.auth.exceptions.GoogleAuthError, OSError, httplib2.HttpLib2Error) as exc:
                err = self.translate(exc, f"batch of {what}")
                if not isinstance(err, TransientError):
                    raise err from exc
                round_.all_failed(keys, err)  # the whole batch failed: nothing says a message is at fault
                return round_
            for i, key in enumerate(keys):
                response, exception = outcomes.get(str(i), (None, ProtocolError("no answer in the batch")))
                if exception is None:
                    round_.answered(key, response)
                    self._answered = True
                elif not (isinstance(exception, HttpError) and exception.status_code == 404):  # 404: vanished
                    err = self.translate(exception, f"{what} {key}")
                    round_.failed(key, err, throttled=_rate_limited(exception), cause=exception)
            return round_

        backoff = Backoff(self._policy, self._sleep)
        return run_batch(list(requests), send, backoff, answered_before=lambda: self._answered)


def _rate_limited(exc: Exception) -> bool:
    return isinstance(exc, HttpError) and (
        exc.status_code == 429 or (exc.status_code == 403 and bool(_reasons(exc) & RATE_LIMIT_REASONS))
    )


def _collector(outcomes: dict[str, tuple[Any, Exception | None]]) -> Callable[[str, Any, Exception | None], None]:
    def collect(request_id: str, response: Any, exception: Exception | None) -> None:
        outcomes[request_id] = (response, exception)

    return collect
