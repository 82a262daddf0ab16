"""GET /img/<sig>?u=<url> (web.blueprints.images) through Flask's test client, in a small app that
registers only this blueprint, with a real Config, against a local image server on 127.0.0.1:
Postroom's signature answers the image with headers that keep it an image; any other answers
404 without a fetch; a refused fetch answers 502 with one sentence."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from postroom.config import Config, load_config
from postroom.image_proxy import derive_key, sign_image_url
from web.blueprints.images import bp

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SECRET = "test-secret-key-0123456789abcdef"


class Images(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body, kind = {"/a.png": (PNG, "image/png"), "/page": (b"<script>alert(1)</script>", "text/html")}.get(
            self.path, (b"", "")
        )
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", kind or "text/plain")
        self.send_header("Set-Cookie", "tracker=1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Images,), {"seen": seen}))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def proxy_config(tmp_path: Path) -> Config:
    return load_config(
        env={
            "HOME": str(tmp_path),
            "POSTROOM_DATA_DIR": str(tmp_path / "data"),
            "POSTROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "POSTROOM_SECRET_KEY": SECRET,
        }
    )


def make_client(config: Config, *, allow_private: bool = True) -> FlaskClient:
    app = Flask(__name__)
    app.config["IMAGE_PROXY_ALLOW_PRIVATE"] = allow_private
    app.extensions["postroom"] = {"config": config}
    app.register_blueprint(bp)
    return app.test_client()


def test_a_signed_image_is_served(proxy_config: Config, upstream: tuple[str, list[str]]) -> None:
    base, seen = upstream
    response = make_client(proxy_config).get(sign_image_url(derive_key(SECRET), base + "/a.png"))
    assert response.status_code == 200 and response.data == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert response.headers["Cache-Control"] == "private, max-age=86400"
    assert response.headers["Content-Disposition"] == "inline"
    assert "Set-Cookie" not in response.headers  # nothing of the image server's but the image
    assert seen == ["/a.png"]


def test_a_signature_under_the_previous_key_still_works(proxy_config: Config, upstream: tuple[str, list[str]]) -> None:
    base, _ = upstream
    rotated = dataclasses.replace(
        proxy_config,
        security=dataclasses.replace(proxy_config.security, secret_key="new-" + SECRET, previous_keys=(SECRET,)),
    )
    client = make_client(rotated)
    assert client.get(sign_image_url(derive_key(SECRET), base + "/a.png")).status_code == 200
    assert client.get(sign_image_url(derive_key("new-" + SECRET), base + "/a.png")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/img/{sig}?u={other}",  # the signature of another URL
        "/img/{wrong}?u={url}",  # a signature under another key
        "/img/{sig}",  # no URL
        "/img/{sig}?u=",
        "/img/not-hex?u={url}",
    ],
)
def test_anything_else_is_not_found_and_fetches_nothing(
    proxy_config: Config, upstream: tuple[str, list[str]], path: str
) -> None:
    base, seen = upstream
    url = base + "/a.png"
    sig = sign_image_url(derive_key(SECRET), url).split("/")[2].split("?")[0]
    wrong = sign_image_url(derive_key("another secret"), url).split("/")[2].split("?")[0]
    path = path.format(sig=sig, wrong=wrong, url=quote(url, safe=""), other=quote(base + "/page", safe=""))
    response = make_client(proxy_config).get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/plain" and response.headers["X-Content-Type-Options"] == "nosniff"
    assert seen == []


def test_a_refused_fetch_is_a_bad_gateway(proxy_config: Config, upstream: tuple[str, list[str]]) -> None:
    base, seen = upstream
    response = make_client(proxy_config).get(sign_image_url(derive_key(SECRET), base + "/page"))
    assert response.status_code == 502
    assert response.get_data(as_text=True) == "The image server sent text/html, not an image it may send.\n"
    assert response.mimetype == "text/plain" and response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert seen == ["/page"]


def test_private_addresses_are_refused_unless_allowed(proxy_config: Config, upstream: tuple[str, list[str]]) -> None:
    base, seen = upstream
    response = make_client(proxy_config, allow_private=False).get(sign_image_url(derive_key(SECRET), base + "/a.png"))
    assert response.status_code == 502
    assert "private address" in response.get_data(as_text=True)
    assert seen == []
