"""Throwaway mail servers for tests: Dovecot (IMAP, IMAPS, LMTP, submission;
PLAIN/LOGIN plus XOAUTH2/OAUTHBEARER via a local token-introspection endpoint)
and an SMTP server (Postfix when running as root, else the aiosmtpd sink), all
on free 127.0.0.1 ports under one temp directory. No system config is touched.

    with MailRig() as rig:
        rig.ports["imap"], rig.users, rig.tokens, rig.tls_ca
        rig.add_user("u1@example.test", "pw")          # hot: Dovecot re-reads passwd
        rig.add_token("tok-u1", "u1@example.test")      # hot: re-read per request
        rig.seed_maildir("u1@example.test", items, folder="Archive")
        rig.doveadm("mailbox", "status", "-u", "u1@example.test", "messages", "INBOX")

SMTP submission comes twice, both requiring AUTH: ``ports["smtp_submission"]`` leaves
Sent alone (the client appends its own copy), while ``ports["smtp_files_sent"]`` files a
copy of every submitted message in the sender's Sent folder itself, as Gmail, Microsoft 365
and many hosts do. That is real Postfix and Dovecot machinery, no test code: the port's
cleanup service has ``sender_bcc_maps`` adding ``<local>+Sent@<domain>`` (from the envelope
sender) as a hidden recipient, and Dovecot's LMTP, with ``recipient_delimiter = +`` and
``lmtp_save_to_detail_mailbox = yes``, saves mail for ``user+Sent`` into that user's Sent (a
detail that names no folder falls back to INBOX, so plus-addressed mail still lands there).
The copy travels through the queue and LMTP like any delivery: it shows up in Sent shortly
*after* the server answered 250 (tens of milliseconds), so a test waits for it. Under the
aiosmtpd sink (not root) the same port LMTP-delivers that extra recipient itself.

Processes run in the foreground (``dovecot -F``, ``master -d``) as children of
the rig and are stopped by their own PIDs. See ``docs`` in
/work/shared/reference/mail-servers.md for the measurements behind the settings.

CLI (handy when poking at a server by hand)::

    python -m tests.rig.mailrig            # prints RIG_* variables, runs until Ctrl-C
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.rig.corpus import write_maildir

HERE = Path(__file__).resolve().parent
DEFAULT_USERS = {
    "alice@example.test": "alicepw",
    "bob@example.test": "bobpw",
    "carol@example.test": "carolpw",
}
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
FOLDERS = {"Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash", "Junk": "\\Junk", "Archive": "\\Archive"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_banner(
    port: int, prefix: bytes, proc: subprocess.Popen[bytes] | None = None, what: str = "", timeout: float = 15.0
) -> bytes:
    """Poll until a TCP greeting starting with ``prefix`` arrives on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                greeting = s.recv(512)
                if greeting.startswith(prefix):
                    return greeting
                last = greeting
        except OSError as exc:
            last = exc
        time.sleep(0.01)
    raise TimeoutError(f"{what} on port {port} not ready after {timeout}s: {last!r}")


class MailRig:
    """One Dovecot + SMTP server set; ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        root: str | None = None,
        users: dict[str, str] | None = None,
        smtp: str = "auto",
        domain: str = "example.test",
        separator: str = "/",
        fsync: bool = False,
        auth_debug: bool = False,
        python: str | None = None,
        compress: bool = True,
        high_performance: bool = False,
    ) -> None:
        self.root = os.path.abspath(root) if root else tempfile.mkdtemp(prefix="mailrig-")
        self._own_root = root is None
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.domain = domain
        self.separator = separator
        self.fsync = fsync
        self.auth_debug = auth_debug
        self.smtp_mode = smtp
        self.compress = compress
        # opt-in (bench/accounts_bench.py): Dovecot's "high-performance" login mode and
        # larger limits for thousands of logins a minute; the default config is unchanged
        self.high_performance = high_performance
        self.python = python or sys.executable
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.tokens: dict[str, Any] = {f"tok-{u.split('@')[0]}": u for u in self.users}
        self.ports: dict[str, int] = {}
        self.smtp_kind = "none"
        self.is_root = os.geteuid() == 0
        if self.is_root:
            self.mail_user, self.mail_group = "nobody", "nogroup"
        else:
            self.mail_user = pwd.getpwuid(os.geteuid()).pw_name
            self.mail_group = grp.getgrgid(os.getegid()).gr_name
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()  # passwd/tokens writes from parallel fixtures

    # ------------------------------------------------------------------ paths
    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def tls_ca(self) -> str:
        """The self-signed certificate (CN=localhost, SAN 127.0.0.1): use it as the CA file."""
        return self.p("tls", "cert.pem")

    @property
    def imap_port(self) -> int:
        return self.ports["imap"]

    def home(self, user: str) -> str:
        return self.p("mail", user)

    def maildir(self, user: str, folder: str = "INBOX") -> str:
        base = os.path.join(self.home(user), "Maildir")
        if folder == "INBOX":
            return base
        return os.path.join(base, "." + folder.replace(self.separator, "."))

    # ------------------------------------------------------------------ accounts
    def _write(self, rel: str, text: str, mode: int = 0o644) -> str:
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return path

    def write_passwd(self) -> None:
        lines = "".join(f"{u}:{{PLAIN}}{pw}::::::\n" for u, pw in self.users.items())
        path = self.p("etc", "passwd")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lines)
        os.chmod(tmp, 0o640)
        if self.is_root:  # Dovecot's auth process reads it as user "dovecot"
            os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
        # Dovecot re-reads the file only when its mtime (whole seconds) or size changes:
        # give every version a strictly later mtime so quick successive edits are seen.
        stamp = max(time.time(), getattr(self, "_passwd_stamp", 0.0) + 1.0)
        self._passwd_stamp = stamp
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)

    def write_tokens(self) -> None:
        path = self.p("etc", "tokens.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.tokens, f, indent=1)
        os.replace(tmp, path)

    def add_user(self, user: str, password: str) -> None:
        """Add or change a password user; Dovecot re-reads the passwd-file when its mtime changes."""
        with self._lock:
            self.users[user] = password
            self.write_passwd()

    def add_token(self, token: str, user: str, active: bool = True) -> None:
        """Make ``token`` a valid OAuth access token for ``user`` (effective on the next login)."""
        with self._lock:
            self.tokens[token] = {"username": user, "active": active}
            self.write_tokens()

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)
            self.write_tokens()

    # ------------------------------------------------------------------ config
    def _cert(self) -> None:
        if os.path.exists(self.tls_ca):
            return
        os.makedirs(self.p("tls"), exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", self.p("tls", "key.pem"), "-out", self.tls_ca, "-days", "3650",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
            check=True, capture_output=True,
        )  # fmt: skip
        os.chmod(self.p("tls", "key.pem"), 0o600)

    def _dovecot_conf(self) -> str:
        p, ports = self.p, self.ports
        if self.is_root:
            ident = (
                "default_internal_user = dovecot\ndefault_internal_group = dovecot\n"
                "default_login_user = dovenull\nfirst_valid_uid = 1\n"
                f"mail_uid = {self.mail_user}\nmail_gid = {self.mail_group}\n"
            )
            chroot = ""
        else:  # rootless: every process runs as the invoking user
            ident = (
                f"default_internal_user = {self.mail_user}\ndefault_internal_group = {self.mail_group}\n"
                f"default_login_user = {self.mail_user}\nfirst_valid_uid = {os.geteuid()}\n"
            )
            chroot = "  chroot =\n"
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
            for name, use in FOLDERS.items()
        )
        zlib = "imap_zlib " if self.compress else ""
        login_perf = imap_perf = ""
        if self.high_performance:
            login_perf = "  service_count = 0\n  process_min_avail = 2\n  client_limit = 4000\n  process_limit = 16\n"
            # imap processes are reused for up to 100 logins (every user has the same uid here)
            imap_perf = (
                "service imap {\n  process_limit = 4096\n  client_limit = 1\n"
                "  service_count = 100\n  process_min_avail = 4\n}\n"
            )
        return f"""# generated by tests/rig/mailrig.py -- throwaway Dovecot in {self.root}
base_dir = {p("run")}
state_dir = {p("state")}
log_path = {p("log", "dovecot.log")}
protocols = imap lmtp submission
listen = 127.0.0.1
hostname = mail.{self.domain}
postmaster_address = postmaster@{self.domain}
{ident}
ssl = yes
ssl_cert = <{p("tls", "cert.pem")}
ssl_key = <{p("tls", "key.pem")}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
auth_debug = {"yes" if self.auth_debug else "no"}
# tests: fail fast (default is 2 s per failure plus a growing per-IP penalty)
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_fsync = {"optimized" if self.fsync else "never"}
mail_max_userip_connections = 200
recipient_delimiter = +
mail_plugins = $mail_plugins zlib quota
imap_metadata = yes
mail_attribute_dict = file:%h/dovecot-attributes
submission_relay_host = 127.0.0.1
submission_relay_port = {ports["smtp"]}
submission_relay_trusted = yes
# mail for user+Sent@domain (the filing submission port's hidden copy) is saved into Sent
lmtp_save_to_detail_mailbox = yes

passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {p("etc", "passwd")}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {p("etc", "dovecot-oauth2.conf.ext")}
}}
userdb {{
  driver = static
  # allow_all_users: LMTP accepts any address (auto-creates its Maildir)
  args = home={p("mail")}/%u allow_all_users=yes
}}

namespace inbox {{
  inbox = yes
  separator = {self.separator}
{mailboxes}}}

protocol imap {{
  mail_plugins = $mail_plugins {zlib}imap_quota
}}
plugin {{
  quota = count:User quota
  quota_rule = *:storage=10G
  quota_vsizes = yes
}}

{imap_perf}service imap-login {{
{chroot}{login_perf}  inet_listener imap {{
    address = 127.0.0.1
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports["imaps"]}
    ssl = yes
  }}
}}
service submission-login {{
{chroot}  inet_listener submission {{
    address = 127.0.0.1
    port = {ports["dovecot_submission"]}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports["lmtp"]}
  }}
}}
service auth {{
  inet_listener sasl {{
    address = 127.0.0.1
    port = {ports["sasl"]}
  }}
}}
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _oauth_conf(self) -> str:
        return (
            "introspection_mode = post\n"
            f"introspection_url = http://127.0.0.1:{self.ports['oauth']}/introspect\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            "force_introspection = yes\n"
        )

    def _postfix_conf(self) -> None:
        p, pt = self.p, self.ports
        main = f"""# generated by tests/rig/mailrig.py
compatibility_level = 3.6
config_directory = {p("postfix", "etc")}
queue_directory = {p("postfix", "spool")}
data_directory = {p("postfix", "data")}
maillog_file = {p("log", "postfix.log")}
maillog_file_prefixes = {self.root}
mail_owner = postfix
setgid_group = postdrop
myhostname = smtp.{self.domain}
mydomain = {self.domain}
myorigin = {self.domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
# every recipient, local domain or not, goes to Dovecot LMTP
virtual_mailbox_domains = {self.domain}
virtual_transport = lmtp:inet:127.0.0.1:{pt["lmtp"]}
default_transport = lmtp:inet:127.0.0.1:{pt["lmtp"]}
relay_transport = lmtp:inet:127.0.0.1:{pt["lmtp"]}
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{pt["sasl"]}
smtpd_sasl_auth_enable = yes
smtpd_tls_security_level = may
smtpd_tls_cert_file = {p("tls", "cert.pem")}
smtpd_tls_key_file = {p("tls", "key.pem")}
smtpd_tls_auth_only = no
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
lmtp_destination_concurrency_limit = 20
message_size_limit = 52428800
"""
        services = [
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        master = (
            "# generated by tests/rig/mailrig.py (no chroot anywhere)\n"
            f"127.0.0.1:{pt['smtp']} inet n - n - - smtpd\n"
            f"127.0.0.1:{pt['smtp_submission']} inet n - n - - smtpd\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
            # submission that files the sender's copy in Sent itself, as Gmail does
            f"127.0.0.1:{pt['smtp_files_sent']} inet n - n - - smtpd\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
            "  -o cleanup_service_name=cleanup_sent\n"
            "cleanup_sent unix n - n - 0 cleanup\n"
            f"  -o sender_bcc_maps=regexp:{p('postfix', 'etc', 'sent_bcc.regexp')}\n"
            + "".join(" ".join(s) + "\n" for s in services)
        )
        self._write("postfix/etc/main.cf", main)
        # the envelope sender's own address, plus-addressed to its Sent folder (see the module docstring)
        self._write("postfix/etc/sent_bcc.regexp", "/^([^+@]+)(\\+[^@]*)?@(.+)$/ ${1}+Sent@${3}\n")
        self._write("postfix/etc/master.cf", master)
        # Postfix polls (300 ms, ~1.5 s in all) until main.cf looks settled; backdate it.
        old = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(p("postfix", "etc", name), (old, old))
        # the queue layout `postfix check` would create (much faster by hand)
        pf = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        spool = p("postfix", "spool")
        for d in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
                  "private", "saved", "trace"):  # fmt: skip
            os.makedirs(os.path.join(spool, d), exist_ok=True)
            os.chown(os.path.join(spool, d), pf.pw_uid, 0)
            os.chmod(os.path.join(spool, d), 0o700)
        for d, mode in (("maildrop", 0o730), ("public", 0o710)):
            os.makedirs(os.path.join(spool, d), exist_ok=True)
            os.chown(os.path.join(spool, d), pf.pw_uid, postdrop)
            os.chmod(os.path.join(spool, d), mode)
        os.makedirs(os.path.join(spool, "pid"), exist_ok=True)
        os.makedirs(p("postfix", "data"), exist_ok=True)
        os.chown(p("postfix", "data"), pf.pw_uid, 0)

    # ------------------------------------------------------------------ run
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.p("log", f"{name}.out"), "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def _pick_smtp(self) -> str:
        if self.smtp_mode != "auto":
            return self.smtp_mode
        if self.is_root and os.path.exists(POSTFIX_MASTER):
            return "postfix"
        probe = subprocess.run([self.python, "-c", "import aiosmtpd"], capture_output=True, check=False)
        return "aiosmtpd" if probe.returncode == 0 else "none"

    def start(self) -> MailRig:
        t_start = time.perf_counter()
        for d in ("etc", "log", "mail", "run", "state", "capture"):
            os.makedirs(self.p(d), exist_ok=True)
        os.chmod(self.root, 0o755)
        if self.is_root:
            pw = pwd.getpwnam(self.mail_user)
            os.chown(self.p("mail"), pw.pw_uid, pw.pw_gid)
        names = ("imap", "imaps", "lmtp", "dovecot_submission", "sasl", "oauth", "smtp", "smtp_submission")
        self.ports = {k: free_port() for k in names}
        self.ports["smtp_files_sent"] = free_port()  # submission whose server files the sender's copy in Sent
        self.smtp_kind = self._pick_smtp()
        self._cert()
        self.write_passwd()
        self.write_tokens()
        self._write("etc/dovecot-oauth2.conf.ext", self._oauth_conf())
        self._write("etc/dovecot.conf", self._dovecot_conf())
        try:
            oauth = self._spawn("oauth", [self.python, str(HERE / "oauth_introspect.py"),
                                          "--tokens", self.p("etc", "tokens.json"),
                                          "--port", str(self.ports["oauth"])])  # fmt: skip
            dovecot = self._spawn("dovecot", ["dovecot", "-F", "-c", self.p("etc", "dovecot.conf")])
            wait_banner(self.ports["imap"], b"* OK", proc=dovecot, what="dovecot")
            self._wait_http(self.ports["oauth"], oauth)
            t = time.perf_counter()
            if self.smtp_kind == "postfix":
                self._postfix_conf()
                postfix = self._spawn("postfix", [POSTFIX_MASTER, "-d", "-c", self.p("postfix", "etc")])
                wait_banner(self.ports["smtp"], b"220", proc=postfix, what="postfix")
            elif self.smtp_kind == "aiosmtpd":
                sink = self._spawn("smtp_sink", [
                    self.python, str(HERE / "smtp_sink.py"),
                    "--mx-port", str(self.ports["smtp"]),
                    "--submission-port", str(self.ports["smtp_submission"]),
                    "--files-sent-port", str(self.ports["smtp_files_sent"]),
                    "--lmtp-port", str(self.ports["lmtp"]),
                    "--local-domains", self.domain,
                    "--passwd", self.p("etc", "passwd"),
                    "--tokens", self.p("etc", "tokens.json"),
                    "--capture-dir", self.p("capture"),
                    "--tls-cert", self.p("tls", "cert.pem"),
                    "--tls-key", self.p("tls", "key.pem"),
                ])  # fmt: skip
                wait_banner(self.ports["smtp"], b"220", proc=sink, what="smtp_sink")
                wait_banner(self.ports["smtp_submission"], b"220", proc=sink, what="smtp_sink")
                wait_banner(self.ports["smtp_files_sent"], b"220", proc=sink, what="smtp_sink")
            self.timings["smtp_ready_s"] = time.perf_counter() - t
        except BaseException:
            self.stop()
            raise
        self.timings["total_start_s"] = time.perf_counter() - t_start
        self._write("state.json", json.dumps(dict(self.info(), pids={k: v.pid for k, v in self.procs.items()})))
        return self

    def _wait_http(self, port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("oauth introspection server died")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.01)
        raise TimeoutError("oauth introspection server not ready")

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM each process we started (Postfix before Dovecot, whose auth it uses)."""
        for name in ("postfix", "smtp_sink", "dovecot", "oauth"):
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MailRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ helpers
    def info(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "host": "127.0.0.1",
            "ports": self.ports,
            "smtp_kind": self.smtp_kind,
            "tls_ca": self.tls_ca,
            "dovecot_conf": self.p("etc", "dovecot.conf"),
            "logs": self.p("log"),
            "capture_dir": self.p("capture") if self.smtp_kind == "aiosmtpd" else None,
            "mail_root": self.p("mail"),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def env(self) -> dict[str, str]:
        env = {
            "RIG_DIR": self.root,
            "RIG_HOST": "127.0.0.1",
            "RIG_TLS_CA": self.tls_ca,
            "RIG_SMTP_KIND": self.smtp_kind,
            "RIG_DOVECOT_CONF": self.p("etc", "dovecot.conf"),
        }
        for name, port in self.ports.items():
            if not (name.startswith("smtp") and self.smtp_kind == "none"):
                env[f"RIG_{name.upper()}_PORT"] = str(port)
        if self.users:
            user, password = next(iter(self.users.items()))
            env["RIG_USER"], env["RIG_PASSWORD"] = user, password
            for token, owner in self.tokens.items():
                if (owner if isinstance(owner, str) else owner["username"]) == user:
                    env["RIG_TOKEN"] = token
                    break
        return env

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c <our dovecot.conf> ARGS`` against the running instance."""
        return subprocess.run(
            ["doveadm", "-c", self.p("etc", "dovecot.conf"), *args], check=check, capture_output=True, text=True
        )

    def chown_mail(self, user: str) -> None:
        """After writing Maildir files as root, hand them to the mail uid."""
        if not self.is_root:
            return
        pw = pwd.getpwnam(self.mail_user)
        for dirpath, _dirs, files in os.walk(self.home(user)):
            os.chown(dirpath, pw.pw_uid, pw.pw_gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)

    def seed_maildir(self, user: str, items: Iterable[Any], folder: str = "INBOX") -> tuple[int, int]:
        """Write messages (objects with ``raw``, ``date``, ``flags``) straight into a
        Maildir: the fastest way to load many. Returns (count, bytes)."""
        md = self.maildir(user, folder)
        os.makedirs(self.home(user), exist_ok=True)
        count, size = write_maildir(items, md)
        if folder != "INBOX":
            Path(md, "maildirfolder").touch()
        self.chown_mail(user)
        return count, size


def main() -> int:
    rig = MailRig().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for key, value in rig.env().items():
            print(f"export {key}={value}", flush=True)
        while not stop.wait(0.2):
            if any(proc.poll() is not None for proc in rig.procs.values()):
                print("a server exited; stopping", file=sys.stderr)
                break
    finally:
        rig.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
