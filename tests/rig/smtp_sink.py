#!/usr/bin/env python3
"""aiosmtpd-based SMTP server for tests: capture + optional LMTP delivery.

Listeners (all 127.0.0.1):
  --mx-port          no AUTH needed (AUTH offered), like port 25
  --submission-port  AUTH required before MAIL FROM, like port 587
  --files-sent-port  (optional) as --submission-port, and the server files a copy of every
                     message in the sender's Sent itself, as Gmail does: it also LMTP-delivers
                     to <local>+Sent@<domain>, which Dovecot (lmtp_save_to_detail_mailbox) saves
                     into Sent
Both offer STARTTLS when --tls-cert/--tls-key are given, and AUTH PLAIN,
LOGIN (checked against a Dovecot passwd-file with {PLAIN} passwords) and
XOAUTH2 / OAUTHBEARER (token checked against the same tokens.json that
oauth_introspect.py serves).  AUTH is allowed without TLS (loopback tests).

Every accepted message is written to --capture-dir as NNNNNN.eml plus
NNNNNN.json (mail_from, rcpt_tos, auth user, port, time).  Recipients in
--local-domains are then delivered to Dovecot over LMTP (--lmtp-port), so
they show up in that user's IMAP INBOX; other recipients are only captured.

Fault injection by recipient local part (for send-path tests):
  tempfail-*@...  -> 451 at RCPT      permfail-*@... -> 550 at RCPT
  datafail-*@...  -> 554 after DATA
  After the whole DATA body has arrived (the message is captured, "fault" in its .json):
  dropdata-*@...  -> the connection is closed without any reply (accepted, answer lost)
  dropfirst-*@... -> the same, the first time that address is seen only
  stall-*@...     -> no reply at all, the connection held open (the client times out)
  slow-*@...      -> 250, one second late
Needs: pip install aiosmtpd
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import smtplib
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def load_passwd(path):
    users = {}
    if path and os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines()
        for line in lines:
            if not line.strip() or line.startswith("#"):
                continue
            user, pw = line.split(":")[:2]
            if pw.startswith("{PLAIN}"):
                pw = pw[7:]
            users[user] = pw
    return users


def token_user(tokens_path, tok):
    try:
        with open(tokens_path) as f:
            tokens = json.load(f)
    except (OSError, ValueError):
        return None
    ent = tokens.get(tok)
    if isinstance(ent, str):
        return ent
    if ent and ent.get("active", True):
        return ent["username"]
    return None


class Handler:
    def __init__(self, a):
        self.a = a
        self.local = {d.lower() for d in a.local_domains.split(",") if d}
        self.seq = itertools.count(1)
        self.lock = threading.Lock()
        self.seen: set[str] = set()  # addresses seen by dropfirst-*
        os.makedirs(a.capture_dir, exist_ok=True)
        existing = [int(f[:6]) for f in os.listdir(a.capture_dir) if f[:6].isdigit()]
        self.seq = itertools.count(max(existing, default=0) + 1)

    # ---- AUTH ---------------------------------------------------------
    def authenticator(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            users = load_passwd(self.a.passwd)
            u, p = auth_data.login.decode(), auth_data.password.decode()
            if users.get(u) == p:
                return AuthResult(success=True, auth_data=u)
        return AuthResult(success=False, handled=False)

    async def _oauth(self, server, args, parse):
        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        user, tok = parse(blob.decode("utf-8", "replace"))
        if user and tok and token_user(self.a.tokens, tok) == user:
            return AuthResult(success=True, auth_data=user)
        # RFC 7628 / XOAUTH2 error flow: 334 <json>, client sends empty line
        err = json.dumps({"status": "invalid_token", "schemes": "bearer", "scope": "mail"})
        await server.challenge_auth(err)
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server, args):
        def parse(s):
            kv = dict(p.split("=", 1) for p in s.split("\x01") if "=" in p)
            auth = kv.get("auth", "")
            return kv.get("user"), auth[7:] if auth.lower().startswith("bearer ") else None

        return await self._oauth(server, args, parse)

    async def auth_OAUTHBEARER(self, server, args):
        def parse(s):
            gs2, _, rest = s.partition("\x01")
            user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), None)
            kv = dict(p.split("=", 1) for p in rest.split("\x01") if "=" in p)
            auth = kv.get("auth", "")
            return user, auth[7:] if auth.lower().startswith("bearer ") else None

        return await self._oauth(server, args, parse)

    # ---- envelope -----------------------------------------------------
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("tempfail-"):
            return "451 4.3.0 Simulated temporary failure"
        if local.startswith("permfail-"):
            return "550 5.1.1 Simulated permanent failure: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _fault(self, rcpt_tos):
        """The after-DATA fault the recipients ask for, if any (see the module docstring)."""
        for rcpt in rcpt_tos:
            local = rcpt.split("@")[0].lower()
            for mode in ("dropdata", "stall", "slow"):
                if local.startswith(mode + "-"):
                    return mode
            if local.startswith("dropfirst-") and rcpt.lower() not in self.seen:
                self.seen.add(rcpt.lower())
                return "dropdata"
        return None

    async def handle_DATA(self, server, session, envelope):
        if any(r.split("@")[0].lower().startswith("datafail-") for r in envelope.rcpt_tos):
            return "554 5.6.0 Simulated failure after DATA"
        fault = self._fault(envelope.rcpt_tos)
        reply = await self._capture(server, session, envelope, fault)
        if fault == "dropdata":
            server.transport.close()  # aiosmtpd's reply is then written nowhere
        elif fault == "stall":
            transport = server.transport
            while transport is not None and not transport.is_closing():
                await asyncio.sleep(0.2)
        elif fault == "slow":
            await asyncio.sleep(1.0)
        return reply

    async def _capture(self, server, session, envelope, fault):
        n = next(self.seq)
        base = os.path.join(self.a.capture_dir, f"{n:06d}")
        data = envelope.original_content or envelope.content
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
        os.replace(base + ".eml.tmp", base + ".eml")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_user": session.auth_data if session.authenticated else None,
            "port": server._port,
            "peer": list(session.peer or ()),
            "time": time.time(),
            "size": len(data),
            "fault": fault,
        }
        local = [r for r in envelope.rcpt_tos if r.rsplit("@", 1)[-1].lower() in self.local]
        sender = envelope.mail_from or ""
        if server._port == self.a.files_sent_port and sender.rsplit("@", 1)[-1].lower() in self.local:
            user, domain = sender.rsplit("@", 1)
            local.append(f"{user.split('+')[0]}+Sent@{domain}")  # the copy the server files in Sent
        if local and self.a.lmtp_port:
            try:
                refused = await asyncio.get_running_loop().run_in_executor(
                    None, self._lmtp, envelope.mail_from, local, data
                )
            except Exception as e:  # LMTP down etc.
                meta["lmtp_error"] = repr(e)
                _write_json(base + ".json", meta)
                return f"451 4.4.1 LMTP delivery failed: {e}"
            meta["lmtp_refused"] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
        _write_json(base + ".json", meta)
        return f"250 2.0.0 Message accepted for delivery as {n:06d}"

    def _lmtp(self, mail_from, rcpts, data):
        # one LMTP transaction per recipient: LMTP answers DATA once per recipient, which
        # smtplib's sendmail does not read (a second recipient's reply would be taken for an error)
        refused = {}
        with smtplib.LMTP("127.0.0.1", self.a.lmtp_port) as lmtp:
            for rcpt in rcpts:
                try:
                    refused.update(lmtp.sendmail(mail_from or "<>", [rcpt], data))
                except smtplib.SMTPRecipientsRefused as exc:
                    refused.update(exc.recipients)
        if len(refused) == len(rcpts):
            raise smtplib.SMTPRecipientsRefused(refused)
        return refused


class PortSMTP(SMTP):
    def __init__(self, *a, port=None, **kw):
        super().__init__(*a, **kw)
        self._port = port

    def _getparams(self, params):
        # accept (and ignore) the RFC 4954 "MAIL FROM:<..> AUTH=<..>" parameter
        # that Dovecot's submission relay sends; aiosmtpd would answer 555
        r = super()._getparams(params)
        if r is not None:
            r.pop("AUTH", None)
        return r


class PortController(Controller):
    def __init__(self, handler, port, auth_required, tls_ctx, **kw):
        self._p, self._req, self._tls = port, auth_required, tls_ctx
        super().__init__(
            handler,
            hostname="127.0.0.1",
            port=port,
            authenticator=handler.authenticator,
            auth_required=auth_required,
            auth_require_tls=False,
            tls_context=tls_ctx,
            require_starttls=False,
            server_hostname="smtp.example.test",
            **kw,
        )

    def factory(self):
        return PortSMTP(self.handler, port=self._p, **self.SMTP_kwargs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mx-port", type=int, required=True)
    ap.add_argument("--submission-port", type=int, required=True)
    ap.add_argument("--files-sent-port", type=int, default=0)
    ap.add_argument("--lmtp-port", type=int, default=0)
    ap.add_argument("--local-domains", default="example.test")
    ap.add_argument("--passwd")
    ap.add_argument("--tokens")
    ap.add_argument("--capture-dir", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    tls = None
    if a.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(a.tls_cert, a.tls_key)
    h = Handler(a)
    kw = dict(data_size_limit=50 * 1024 * 1024, enable_SMTPUTF8=True)
    ctrls = [PortController(h, a.mx_port, False, tls, **kw), PortController(h, a.submission_port, True, tls, **kw)]
    if a.files_sent_port:
        ctrls.append(PortController(h, a.files_sent_port, True, tls, **kw))
    for c in ctrls:
        c.start()
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    print(f"smtp sink: mx 127.0.0.1:{a.mx_port} submission 127.0.0.1:{a.submission_port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for c in ctrls:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
