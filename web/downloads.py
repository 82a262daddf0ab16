"""An attachment a processing mailbox kept, answered as a download — one function for the page
(``/inbound/attachments/<id>``) and the API (``/api/v1/inbound/attachments/<id>``), so both
send the same headers.

The type declared is the service's (:func:`services.inbound.get_attachment`): a few inert
types as they are, anything else ``application/octet-stream``, never HTML or SVG a browser
would run. Always ``Content-Disposition: attachment`` with ``nosniff``, a sandboxing CSP of
its own, and no cache keeping it.
"""

from __future__ import annotations

from flask import abort, send_file
from werkzeug.wrappers import Response

from services.inbound import AttachmentFile


def attachment_download(found: AttachmentFile) -> Response:
    """``found`` as a download; 404 when its file is gone from the blob directory."""
    if not found.path.is_file():
        abort(404)
    response = send_file(found.path, mimetype=found.content_type, as_attachment=True, download_name=found.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response
