#!/usr/bin/env python3
"""Tiny fake OAuth2 token-introspection endpoint for Dovecot's oauth2 passdb.

Binds 127.0.0.1 only.  Tokens live in a JSON file that is re-read on every
request, so a test can add / revoke tokens while everything runs:

    {"tok-alice": "alice@example.test",
     "tok-bob":   {"username": "bob@example.test", "active": true}}

Accepted request shapes (all Dovecot introspection_mode values that talk HTTP):
  POST /introspect   body  token=<tok>        (introspection_mode = post)
  GET  /introspect?token=<tok> or /introspect/<tok>   (introspection_mode = get)
  GET  /introspect   Authorization: Bearer <tok>      (introspection_mode = auth)

Reply: 200 {"active": true, "username": ...} for a known token,
       200 {"active": false} for an unknown/revoked one (RFC 7662 style).
Every request is appended to <tokens>.log (one JSON line) so tests can count
how often Dovecot asked.

Usage: oauth_introspect.py --tokens tokens.json [--port 0] [--port-file F]
       (port 0 = pick a free one; the chosen port is printed and written to
       --port-file if given)
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(tokens_path):
    log_path = tokens_path + ".log"
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes; without TCP_NODELAY the
        # second one waits for the peer's delayed ACK (~40 ms per login)
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # keep stderr quiet
            pass

        def _token(self, body):
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                return auth[7:].strip()
            u = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(u.query)
            for k in ("token", "access_token"):
                if k in q:
                    return q[k][0]
            if body:
                f = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
                for k in ("token", "access_token"):
                    if k in f:
                        return f[k][0]
            # /introspect/<token>
            parts = u.path.rstrip("/").split("/")
            if len(parts) >= 3:
                return urllib.parse.unquote(parts[-1])
            return ""

        def _answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            tok = self._token(body)
            try:
                with open(tokens_path) as f:
                    tokens = json.load(f)
            except FileNotFoundError:
                tokens = {}
            ent = tokens.get(tok)
            if isinstance(ent, str):
                ent = {"username": ent, "active": True}
            if ent and ent.get("active", True):
                reply = {
                    "active": True,
                    "username": ent["username"],
                    "scope": ent.get("scope", "mail"),
                    "exp": int(time.time()) + 3600,
                }
            else:
                reply = {"active": False}
            data = json.dumps(reply).encode()
            with lock, open(log_path, "a") as lf:
                lf.write(
                    json.dumps(
                        {
                            "t": time.time(),
                            "method": self.command,
                            "path": self.path,
                            "token": tok,
                            "active": reply["active"],
                        }
                    )
                    + "\n"
                )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(os.path.abspath(a.tokens)))
    port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, a.port_file)
    print(port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
