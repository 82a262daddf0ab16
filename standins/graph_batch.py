"""Graph's JSON batching (``POST /v1.0/$batch``) for :class:`standins.graph.GraphStandIn`.

A batch body is ``{"requests": [{"id": "1", "method": "GET", "url": "/me/messages/AAMk..."}, ...]}``:
at most 20 parts, URLs relative to the version root, a JSON ``body`` (with its
``headers``) where the call takes one. The answer lists each part's ``id``, ``status``,
``headers`` and ``body`` (JSON as JSON, anything else base64), in any order; every part
is answered on its own, so one can fail while the others succeed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from standins import graph_render as render
from standins.faults import DROPPED
from standins.graph_store import GraphError

MAX_BATCH = 20
Answer = tuple[int, dict[str, str], bytes]
# dispatch(method, path, query, headers, body) answers one part as the stand-in would a request
Dispatch = Callable[[str, str, str, dict[str, str], bytes], Answer]
# error(status, code, message) is the stand-in's error answer
ErrorAnswer = Callable[[int, str, str], Answer]


def batch_parts(body: bytes) -> list[dict[str, Any]]:
    """The parts of a batch body; :class:`GraphError` (400) for a body Graph refuses."""
    parts = render.json_body(body).get("requests")
    if not isinstance(parts, list) or not parts:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(parts) > MAX_BATCH:
        raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the limit of {MAX_BATCH}.")
    return parts


def part_answer(part: dict[str, Any], dispatch: Dispatch, error: ErrorAnswer) -> dict[str, Any]:
    """One part's entry in the batch answer."""
    url, _, query = str(part.get("url", "")).partition("?")
    url = unquote(url)
    part_headers = {k.lower(): str(v) for k, v in (part.get("headers") or {}).items()}
    body = part.get("body")
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        part_headers.setdefault("content-type", "application/json")
    else:
        data = str(body or "").encode()
    if not url.startswith("/"):
        status, out_headers, out = error(400, "BadRequest", "Batch request URLs must be relative.")
    else:
        status, out_headers, out = dispatch(str(part.get("method", "GET")).upper(), url, query, part_headers, data)
        if status == DROPPED:  # one part cannot close the batch's connection: a server error instead
            status, out_headers, out = error(503, "ServiceUnavailable", "Service is temporarily unavailable.")
    answer: dict[str, Any] = {
        "id": str(part.get("id")),
        "status": status,
        "headers": {k: v for k, v in out_headers.items() if k != "request-id"},
    }
    if out:
        is_json = out_headers.get("Content-Type", "").startswith("application/json")
        answer["body"] = json.loads(out) if is_json else base64.b64encode(out).decode("ascii")
    return answer
