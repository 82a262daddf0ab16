"""``/api/v1/inbound`` as an integrating system uses it (Flask's test client, a real API token,
the real services, mail taken from the rig's Dovecot by the real loop): an admin designates a
mailbox; a recruiter runs it, reads the items (exactly ``as_json()``, paged, filtered),
downloads an attachment, retries a failed item that now succeeds — but may not designate (403,
nothing designated); another organisation's ids answer like missing ones; no token, 401; a
wrong designation names its field. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from postroom.config import Config
from services.inbound import get_item, run_once
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect
from tests.web.api_client import MISSING, ApiClient, api_client, assert_error, assert_same_404, new_org
from tests.web.inbound_helpers import inbound_message, strict_config
from web import create_app

RESUME = b"%PDF-1.4 the resume of Ada"
ITEM_KEYS = {
    "id", "message_id", "status", "reason", "data", "text", "attachments", "routed_to", "data_source",
    "auto_reply", "sender", "subject", "applicant_id", "bounced_recipients", "bounces", "mailbox_id", "moved",
    "created_at", "processed_at",
}  # fmt: skip


def _two_orgs(config: Config) -> tuple[Flask, ApiClient, ApiClient]:
    """The app and the tokens of Alpha's admin and Bravo's admin (only an admin designates)."""
    app = create_app(config)
    alpha = api_client(app, "alpha@alpha.test", new_org(app, "Alpha"), role="admin")
    bravo = api_client(app, "bravo@bravo.test", new_org(app, "Bravo"), role="admin")
    return app, alpha, bravo


def _recruiter(app: Flask, admin: ApiClient) -> ApiClient:
    """A recruiter's token of the admin's organisation."""
    return api_client(app, f"recruiter{admin.org_id}@example.test", admin.org_id)


def _close(app: Flask) -> None:
    app.extensions["postroom"]["hits"].close()
    app.extensions["postroom"]["sessions"].kw["bind"].dispose()


def test_designate_run_and_read_the_items(config: Config, sessions: sessionmaker[Session], mailbox: Mailbox) -> None:
    app, boss, bravo = _two_orgs(config)
    account_id = connect(config, sessions, mailbox, boss.org_id)
    created = boss.ok("POST", "/api/v1/inbound/mailboxes", 201, json={"account_id": account_id, "processed": "Done"})
    assert set(created) == {"id"}
    alpha = _recruiter(app, boss)  # the rest is open to a recruiter of the organisation
    boxes = alpha.ok("GET", "/api/v1/inbound/mailboxes")
    assert boxes == {
        "items": [
            {
                "id": created["id"],
                "account_id": account_id,
                "email": mailbox.address,
                "folder": "INBOX",
                "processed": "Done",
                "failed": "failed",
                "move": "auto",
                "last_run_at": None,
                "last_error": None,
            }
        ],
        "total": 1,
        "offset": 0,
        "limit": 50,
    }
    mailbox.append(
        inbound_message(
            "<json@agency.example>", "Data attached.", json_part='{"Name": "Ada"}', attachment=("cv.pdf", RESUME)
        )
    )
    mailbox.append(inbound_message("<yaml@example.org>"))
    mailbox.append(inbound_message("<plain@example.org>", "Just a note, no data."))
    mailbox.append(inbound_message("<bad@agency.example>", "x", json_part='{"name": "unterminated'))

    assert alpha.ok("POST", "/api/v1/inbound/run") == {"processed": 3, "failed": 1}
    assert bravo.ok("POST", "/api/v1/inbound/run") == {"processed": 0, "failed": 0}
    assert len(mailbox.uids("Done")) == 3 and len(mailbox.uids("failed")) == 1 and mailbox.uids("INBOX") == []
    assert alpha.ok("GET", "/api/v1/inbound/mailboxes")["items"][0]["last_run_at"] is not None

    page = alpha.ok("GET", "/api/v1/inbound/items")
    assert (page["total"], page["offset"], page["limit"]) == (4, 0, 50)
    with sessions() as s:
        assert page["items"] == [get_item(s, alpha.org_id, i["id"]).as_json() for i in page["items"]]
    assert all(set(i) == ITEM_KEYS for i in page["items"])
    by_id = {i["message_id"]: i for i in page["items"]}
    assert [i["message_id"] for i in page["items"]] == [
        "<bad@agency.example>",
        "<plain@example.org>",
        "<yaml@example.org>",
        "<json@agency.example>",
    ]  # newest first
    assert by_id["<json@agency.example>"]["data"] == {"name": "Ada"}
    assert by_id["<yaml@example.org>"]["data"] == {"name": "Grace Hopper", "role": "Admiral"}
    bad = by_id["<bad@agency.example>"]
    assert bad["status"] == "failed" and "json" in bad["reason"].lower() and bad["routed_to"] is None

    failed = alpha.ok("GET", "/api/v1/inbound/items?status=failed")
    assert failed["total"] == 1 and [i["message_id"] for i in failed["items"]] == ["<bad@agency.example>"]
    assert alpha.ok("GET", "/api/v1/inbound/items?status=processed")["total"] == 3
    first = alpha.ok("GET", "/api/v1/inbound/items?limit=3")
    rest = alpha.ok("GET", "/api/v1/inbound/items?limit=3&offset=3")
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in page["items"]]
    assert (first["total"], rest["total"], len(rest["items"])) == (4, 4, 1)

    one = by_id["<json@agency.example>"]
    assert alpha.ok("GET", f"/api/v1/inbound/items/{one['id']}") == one
    (att,) = one["attachments"]
    assert att == {"id": att["id"], "filename": "cv.pdf", "content_type": "application/pdf", "size": len(RESUME)}
    download = alpha.get(f"/api/v1/inbound/attachments/{att['id']}")
    assert download.status_code == 200 and download.data == RESUME
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"] == "attachment; filename=cv.pdf"
    assert download.headers["X-Content-Type-Options"] == "nosniff"

    # another organisation's ids answer exactly like missing ones; its lists are empty
    for url in ("/api/v1/inbound/items/{}", "/api/v1/inbound/attachments/{}"):
        mine = one["id"] if "items" in url else att["id"]
        assert_same_404(bravo.get(url.format(mine)), bravo.get(url.format(MISSING)), mine)
    bad_id = bad["id"]
    assert_same_404(
        bravo.post(f"/api/v1/inbound/items/{bad_id}/retry"),
        bravo.post(f"/api/v1/inbound/items/{MISSING}/retry"),
        bad_id,
    )
    assert bravo.ok("GET", "/api/v1/inbound/items") == {"items": [], "total": 0, "offset": 0, "limit": 50}
    assert bravo.ok("GET", "/api/v1/inbound/mailboxes")["items"] == []

    # no token: 401, never data
    anonymous = app.test_client()
    for method, url in (("GET", "/api/v1/inbound/items"), ("POST", "/api/v1/inbound/run"),
                        ("GET", f"/api/v1/inbound/attachments/{att['id']}")):  # fmt: skip
        response = anonymous.open(url, method=method)
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _close(app)


def test_a_wrong_designation_names_its_field(config: Config, sessions: sessionmaker[Session], mailbox: Mailbox) -> None:
    app, alpha, bravo = _two_orgs(config)
    account_id = connect(config, sessions, mailbox, alpha.org_id)
    url = "/api/v1/inbound/mailboxes"
    assert_error(alpha.post(url, json={}), 422, "account_id")
    assert_error(alpha.post(url, json={"account_id": account_id, "move": "sometimes"}), 422, "move")
    assert_error(alpha.post(url, json={"account_id": account_id, "colour": "red"}), 422, "colour")
    same = assert_error(alpha.post(url, json={"account_id": account_id, "processed": "INBOX"}), 400, "folder")
    assert same == "folder, processed and failed must be three different folders."
    assert_error(alpha.post(url, json={"account_id": account_id, "failed": "  "}), 400, "failed")
    assert_error(alpha.post(url, json={"account_id": account_id, "folder": "a*b"}), 400, "folder")
    # Bravo cannot designate Alpha's account: answered as an account that does not exist
    theirs = assert_error(bravo.post(url, json={"account_id": account_id}), 400, "account_id")
    missing = assert_error(bravo.post(url, json={"account_id": MISSING}), 400, "account_id")
    assert theirs.replace(str(account_id), "ID") == missing.replace(str(MISSING), "ID")
    assert bravo.ok("GET", url)["total"] == 0
    alpha.ok("POST", url, 201, json={"account_id": account_id})
    again = assert_error(alpha.post(url, json={"account_id": account_id}), 400, "account_id")
    assert "already" in again
    assert_error(alpha.get("/api/v1/inbound/items?status=lost"), 422, "status")
    assert_error(alpha.get("/api/v1/inbound/items?limit=0"), 422, "limit")
    _close(app)


def test_retry_a_failed_item_that_now_succeeds(
    env: dict[str, str], tmp_path: Path, config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    strict = strict_config(env, tmp_path)
    app, boss, _ = _two_orgs(config)  # the app runs with the raised limit
    account_id = connect(config, sessions, mailbox, boss.org_id)
    boss.ok("POST", "/api/v1/inbound/mailboxes", 201, json={"account_id": account_id})
    alpha = _recruiter(app, boss)
    mailbox.append(inbound_message("<big@example.org>", "Name: Big\n---\n" + "lorem ipsum " * 400))
    mailbox.append(inbound_message("<broken@agency.example>", "x", json_part="{not json"))
    assert run_once(strict, sessions).failed == 2  # the worker ran under the old, lower limit
    big, broken = sorted(alpha.ok("GET", "/api/v1/inbound/items?status=failed")["items"], key=lambda i: i["id"])
    assert "max_message_size" in big["reason"] and len(mailbox.uids("failed")) == 2

    retried = alpha.ok("POST", f"/api/v1/inbound/items/{big['id']}/retry")
    assert (retried["id"], retried["status"], retried["reason"], retried["data"]) == (
        big["id"], "processed", None, {"name": "Big"}
    )  # fmt: skip
    assert alpha.ok("GET", f"/api/v1/inbound/items/{big['id']}") == retried
    assert len(mailbox.uids("failed")) == 1 and len(mailbox.uids("processed")) == 1  # moved over

    still = alpha.ok("POST", f"/api/v1/inbound/items/{broken['id']}/retry")
    assert still["status"] == "failed" and still["reason"] == broken["reason"]
    assert alpha.ok("GET", "/api/v1/inbound/items?status=failed")["total"] == 1
    _close(app)


def test_a_recruiters_token_may_not_designate(
    config: Config, sessions: sessionmaker[Session], mailbox: Mailbox
) -> None:
    app, boss, _ = _two_orgs(config)
    recruiter = _recruiter(app, boss)
    account_id = connect(config, sessions, mailbox, boss.org_id)
    mailbox.append(inbound_message("<stays@example.org>", "Name: Stays"))
    url = "/api/v1/inbound/mailboxes"
    refused = assert_error(recruiter.post(url, json={"account_id": account_id}), 403)
    assert refused == (
        "Only an admin of the organisation may designate a processing mailbox; this token is a recruiter's."
    )
    assert recruiter.ok("GET", url)["total"] == 0  # nothing designated
    assert recruiter.ok("POST", "/api/v1/inbound/run") == {"processed": 0, "failed": 0}
    assert len(mailbox.uids("INBOX")) == 1  # and nothing taken from the source folder
    boss.ok("POST", url, 201, json={"account_id": account_id})  # the same request, from an admin
    assert recruiter.ok("GET", url)["total"] == 1
    _close(app)
