"""The image proxy: ``GET /img/<sig>?u=<url>`` answers the image at ``url`` if Postroom signed it.

The mail view (:mod:`postroom.safe_html`) rewrites a message's remote images to these paths
when the reader asks to see them (:func:`postroom.image_proxy.sign_image_url`), so the
reader's browser never contacts the sender's server. A signature that is not Postroom's
answers 404 at once (nothing fetched, nothing recorded), so the route is no open proxy;
signatures made under a previous ``security.secret_key`` stay valid while
``postroom keys rotate`` runs its course. A fetch the proxy refuses or that fails answers 502
with one sentence (:class:`postroom.image_proxy.ImageProxyError`).

The image is answered with its own Content-Type (an allow-listed raster type), ``nosniff``
and ``Content-Security-Policy: default-src 'none'`` (so even a browser that opens it as a
page runs nothing), ``Content-Disposition: inline`` and a private cache of a day.

``current_app.config["IMAGE_PROXY_ALLOW_PRIVATE"] = True`` lets tests fetch from 127.0.0.1;
never set it in production.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from postroom.config import Config
from postroom.image_proxy import ImageProxyError, derive_key, fetch_image, verify

bp = Blueprint("images", __name__)

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
    "Referrer-Policy": "no-referrer",
}


def _text(status: int, sentence: str) -> Response:
    return Response(sentence + "\n", status, {**_COMMON, "Cache-Control": "no-store"}, mimetype="text/plain")


def _signed(sig: str, url: str) -> bool:
    config: Config = current_app.extensions["postroom"]["config"]
    secrets = (config.security.key(), *config.security.previous_keys)
    return any(verify(derive_key(secret), sig, url) for secret in secrets)


@bp.get("/img/<sig>")
def image(sig: str) -> Response:
    """The image ``u`` names, if ``sig`` is Postroom's signature of it."""
    url = request.args.get("u", "")
    if not url or not _signed(sig, url):
        return _text(404, "No such image.")
    try:
        fetched = fetch_image(url, allow_private=bool(current_app.config.get("IMAGE_PROXY_ALLOW_PRIVATE", False)))
    except ImageProxyError as exc:
        return _text(502, str(exc))
    headers = {**_COMMON, "Cache-Control": "private, max-age=86400", "Content-Disposition": "inline"}
    return Response(fetched.body, 200, headers, content_type=fetched.content_type)
