"""``/messages/<id>``: one message — its headers, then its body — and its attachments.

Mail HTML is hostile, so the page never puts it in its own document: the sanitised HTML
(:func:`services.messages.get_message`) goes into ``<iframe class="mail" sandbox srcdoc>`` as a
whole document (:func:`postroom.safe_html.srcdoc_document`) whose own Content-Security-Policy
allows no script and images only from Postroom's image proxy; the ``sandbox`` has no
``allow-scripts`` and no ``allow-same-origin`` (only ``allow-popups`` and
``allow-popups-to-escape-sandbox``, so a link opens in a new tab as an ordinary page). Remote
images stay blocked until "Show images" (``?images=1``); then they load through ``/img/``.

An ``srcdoc`` frame inherits the page's CSP as well as having its own, so the page widens
``style-src`` to ``'unsafe-inline'`` (``g.csp_inline_styles``) when it shows an HTML body: mail
is laid out with ``<style>``-less inline styles, which would otherwise all be dropped. That page
holds nothing but escaped text of its own; scripts stay ``'self'`` only.

A plain-text body is shown in the page itself, escaped with its links made links
(:func:`postroom.safe_html.text_to_html`). Attachments download as attachments
(``Content-Disposition: attachment``), under a safe name, with a type a browser will not run
(``application/octet-stream`` unless harmless), ``nosniff``, and a ``sandbox`` CSP of their own.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, abort, current_app, g, render_template, request

from postroom.safe_html import srcdoc_document
from services.messages import MessageError, get_attachment, get_message
from web.auth import org_id

bp = Blueprint("messages", __name__)


@bp.get("/messages/<int:email_id>")
def show(email_id: int) -> str:
    show_images = request.args.get("images") == "1"
    ext = current_app.extensions["postroom"]
    with ext["sessions"].begin() as s:  # begin: opening an old message fills its snippet in
        try:
            message = get_message(s, ext["config"], org_id(), email_id, show_images=show_images)
        except MessageError:
            abort(404)
    srcdoc = None
    if message.html is not None:
        g.csp_inline_styles = True
        proxy_prefix = request.host_url.rstrip("/") + "/img/"
        srcdoc = srcdoc_document(message.html, allow_images_from=proxy_prefix if show_images else None)
    return render_template("messages/show.html", message=message, srcdoc=srcdoc, show_images=show_images)


@bp.get("/messages/<int:email_id>/attachments/<int:index>")
def attachment(email_id: int, index: int) -> Response:
    ext = current_app.extensions["postroom"]
    with ext["sessions"]() as s:
        try:
            found = get_attachment(s, ext["config"], org_id(), email_id, index)
        except MessageError:
            abort(404)
    fallback = found.filename.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("?", "_")
    response = Response(found.data, mimetype=found.content_type)
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(found.filename, safe='')}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response
