"""One test of "this machine" (postroom.urls.is_loopback_host) for every place that asks.

It decides whether IMAP/SMTP may run without TLS, whether an OAuth endpoint may be plain
http, and whether ``postroom serve`` warns about listening beyond this machine. The IMAP
backend's copy and the config's used to disagree: the backend took ``localhost.localdomain``
(an /etc/hosts convention, not a reserved name, so DNS may send it anywhere) and refused
``[::1]``; the config did the opposite.
"""

from __future__ import annotations

import pytest

from postroom.config import ConfigError, load_config
from postroom.urls import is_loopback_host
from providers import transport
from providers.errors import ConfigurationError
from providers.transport import Endpoint, check_endpoint

CASES = [
    ("localhost", True),
    ("LocalHost", True),
    ("127.0.0.1", True),
    ("127.8.9.10", True),  # all of 127.0.0.0/8
    ("::1", True),
    ("[::1]", True),  # as URLs and host settings write an IPv6 address
    ("0:0:0:0:0:0:0:1", True),
    ("::ffff:127.0.0.1", True),  # IPv4-mapped: the same address
    ("localhost.localdomain", False),
    ("localhost.", False),
    ("my.localhost", False),
    ("127.0.0.1.nip.io", False),
    ("128.0.0.1", False),
    ("0.0.0.0", False),  # every interface, not this machine only
    ("::", False),
    ("10.0.0.1", False),
    ("mail.example.com", False),
    ("[::1", False),
    ("[127.0.0.1", False),
    (" 127.0.0.1", False),
    ("", False),
]


@pytest.mark.parametrize(("host", "loopback"), CASES)
def test_which_hosts_are_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("host", "loopback"), CASES)
def test_plaintext_imap_follows_the_same_rule(host: str, loopback: bool) -> None:
    endpoint = Endpoint(host=host, port=143, security="none")
    if loopback:
        check_endpoint(endpoint, allow_plaintext=False, what="IMAP")
    else:
        with pytest.raises(ConfigurationError, match="refusing an unencrypted connection"):
            check_endpoint(endpoint, allow_plaintext=False, what="IMAP")
    check_endpoint(endpoint, allow_plaintext=True, what="IMAP")  # the user's explicit choice
    assert transport.is_loopback is is_loopback_host  # the name other layers import from the transport


@pytest.mark.parametrize(("host", "loopback"), [("[::1]", True), ("localhost.localdomain", False)])
def test_plain_http_oauth_endpoints_follow_the_same_rule(tmp_path, host: str, loopback: bool) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "postroom.toml"
    path.write_text(f'[google]\nclient_id = "cid"\ntoken_uri = "http://{host}:8025/token"\n')
    if loopback:
        assert load_config(path, env={"HOME": str(tmp_path)}).google.token_uri == f"http://{host}:8025/token"
    else:
        with pytest.raises(ConfigError, match=r"google\.token_uri must use https"):
            load_config(path, env={"HOME": str(tmp_path)})
