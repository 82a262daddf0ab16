"""Talking to Microsoft Graph: bearer tokens (from :mod:`providers.microsoft_tokens`), retries, batching.

Every failure leaves here as a :mod:`providers.errors` class:

=====================================================  =========================================
what Graph, the identity platform or the network did   raised
=====================================================  =========================================
token endpoint: ``invalid_grant`` (AADSTS50173          :class:`AuthError`
revoked, 700082 expired, ...), ``invalid_client``;
401 even after a fresh token; 403
429, 503, 504 (and other 5xx, connection errors on      retried with capped exponential backoff,
calls that are safe to repeat)                          honouring Retry-After, then
                                                        :class:`TransientError` (``retry_after`` set)
404                                                     the caller's ``not_found`` class
                                                        (batches: the id is left out)
410 (``SyncStateNotFound``, ``resyncRequired``)         :class:`CursorInvalidError`
other 4xx                                               :class:`ProtocolError`
one batch part keeps failing (4xx, or 5xx after every   :class:`ProtocolError` naming the part
retry while the other parts were answered)              (``remote_id``), so only it is quarantined
=====================================================  =========================================

Backoff for attempt n is ``base * 2**n``, at least the server's Retry-After; a
Retry-After above ``cap`` or a sleep that would pass ``budget`` gives up at once, so the
scheduler backs the account off instead of a worker thread sleeping
(:mod:`providers.common.retry`, which also runs the batches). Sends are retried
only on 429, which Graph answers before doing anything. A call that is not safe to
repeat (``idempotent=False``: sendMail, creating a message) raises :class:`SendUncertain`
for a 5xx, a read timeout or a connection lost after the request was written: Graph may
have acted on it. Failing to connect is :class:`TransientError` (nothing was sent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import requests

from providers.base import ProviderSettings
from providers.common.http import request_may_have_arrived
from providers.common.retry import Backoff, BatchRound, RetryPolicy, run_batch
from providers.errors import (
    AuthError,
    CursorInvalidError,
    ProtocolError,
    ProviderError,
    SendUncertain,
    TransientError,
)
from providers.microsoft_tokens import MicrosoftTokens

GRAPH_SCOPES = ("https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send")
MAX_BATCH = 20  # Graph's limit for JSON batching
RETRYABLE = {429, 500, 502, 503, 504}


class GraphCalls:
    """Authenticated Graph requests for one provider (one thread)."""

    def __init__(
        self,
        settings: ProviderSettings,
        session: requests.Session,
        *,
        root: str,
        authority: str,
        verify: str | bool | None,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> None:
        self.root, self._session, self._verify = root, session, verify
        self._settings, self._where = settings, f"Graph {settings.email}"
        self._policy, self._sleep = policy, sleep
        scopes = settings.options.get("scopes") or GRAPH_SCOPES
        self._tokens = MicrosoftTokens(
            settings, session, authority=authority, scopes=scopes, verify=verify, where=self._where
        )

    # ------------------------------------------------------------ tokens
    def _token(self) -> str:
        return self._tokens.token()

    def refresh(self) -> str:
        """A fresh access token from the refresh token; rotated refresh tokens are reported."""
        return self._tokens.refresh()

    def token_for(self, scopes: tuple[str, ...], *, fresh: bool = False) -> str:
        """An access token for another resource (Exchange Online's SMTP.Send) from the same grant."""
        return self._tokens.token_for(scopes, fresh=fresh)

    # ------------------------------------------------------------ errors
    def translate(
        self, resp: requests.Response, what: str, not_found: type[ProviderError] = ProtocolError
    ) -> ProviderError:
        code, message = _error_of(resp)
        status = resp.status_code
        text = f"{self._where}: {what} answered {status} {code}: {message}"
        if status in RETRYABLE:
            return TransientError(text, retry_after=_retry_after(resp.headers))
        if status in (401, 403):
            return AuthError(text)
        if status == 404:
            return not_found(text)
        if status == 410:
            return CursorInvalidError(text)
        return ProtocolError(text)

    # ------------------------------------------------------------ calls
    def request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        not_found: type[ProviderError] = ProtocolError,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One call with retries; ``url`` is absolute or relative to the Graph root."""
        if not url.startswith("https://") and not url.startswith("http://"):
            url = self.root + url
        backoff, refreshed = Backoff(self._policy, self._sleep), False
        headers = dict(kwargs.pop("headers", None) or {})
        while True:
            headers["Authorization"] = f"Bearer {self._token()}"
            try:
                resp = self._session.request(
                    method, url, headers=headers, timeout=self._settings.timeout, verify=self._verify, **kwargs
                )
            except requests.RequestException as exc:
                if not idempotent and request_may_have_arrived(exc):
                    text = f"{self._where}: {what}: no answer after the request was sent: {exc!r}"
                    raise SendUncertain(text) from exc
                err: ProviderError = TransientError(f"{self._where}: {what} failed: {exc!r}")
                throttled = False
            else:
                if resp.status_code == 401 and not refreshed:
                    refreshed = True
                    self.refresh()
                    continue
                if resp.status_code < 400:
                    return resp
                if not idempotent and resp.status_code >= 500:
                    code, message = _error_of(resp)
                    raise SendUncertain(f"{self._where}: {what} answered {resp.status_code} {code}: {message}")
                err = self.translate(resp, what, not_found)
                throttled = resp.status_code == 429
            if not backoff.retry(err, idempotent=idempotent, throttled=throttled):
                raise err

    def json(self, method: str, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.request(method, url, what, **kwargs)
        try:
            value = resp.json()
        except ValueError as exc:
            raise ProtocolError(f"{self._where}: {what} answered something that is not JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolError(f"{self._where}: {what} answered {type(value).__name__}, not an object")
        return value

    def batch(self, parts: Mapping[str, Mapping[str, Any]], what: str) -> dict[str, Any]:
        """Run ``{key: {"method", "url"[, "body"]}}`` through ``$batch`` (20 per request);
        ``{key: body}`` of the successful parts, without the 404s. Throttled parts are
        retried after the backoff; any other failure raises its translated error."""
        results: dict[str, Any] = {}
        keys = list(parts)
        for start in range(0, len(keys), MAX_BATCH):
            results.update(self._one_batch({k: parts[k] for k in keys[start : start + MAX_BATCH]}, what))
        return results

    def _one_batch(self, parts: Mapping[str, Mapping[str, Any]], what: str) -> dict[str, Any]:
        refreshed = False

        def send(keys: list[str]) -> BatchRound:
            nonlocal refreshed
            round_ = BatchRound()
            payload = {"requests": [_batch_request(str(i), parts[k]) for i, k in enumerate(keys)]}
            answer = self.json("POST", "/$batch", f"batch of {what}", json=payload)
            by_id = {str(r.get("id")): r for r in answer.get("responses", [])}
            for i, key in enumerate(keys):
                part = by_id.get(str(i))
                if part is None:
                    raise ProtocolError(f"{self._where}: the batch of {what} did not answer part {key}")
                status = int(part.get("status", 0))
                if status < 400:
                    round_.answered(key, part.get("body"))
                elif status == 401 and not refreshed:
                    refreshed = True
                    self.refresh()
                    round_.resend(key)
                elif status != 404:  # 404: vanished meanwhile, skipped as the contract says
                    fake = _PartResponse(status, part.get("headers") or {}, part.get("body"))
                    err = self.translate(fake, f"{what} {key}")  # type: ignore[arg-type]
                    round_.failed(key, err, throttled=status == 429)
            return round_

        return run_batch(list(parts), send, Backoff(self._policy, self._sleep))


class _PartResponse:
    """Enough of a ``requests.Response`` for :meth:`GraphCalls.translate` to read a batch part."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self._body = body

    def json(self) -> Any:
        return self._body


def _batch_request(part_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": part_id, "method": spec.get("method", "GET"), "url": spec["url"]}
    if "body" in spec:
        out["body"] = spec["body"]
        out["headers"] = {"Content-Type": "application/json"}
    return out


def _error_of(resp: Any) -> tuple[str, str]:
    try:
        error = resp.json().get("error", {})
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return str(error), ""
    return str(error.get("code", "")), str(error.get("message", ""))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = {k.lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
