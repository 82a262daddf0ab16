"""An applicant's résumé, taken by a processing mailbox from Dovecot, listed under "Documents" on
their page and downloaded as an attachment (Flask's test client, real sign-in); another
organisation's recruiter gets 404 for its id. SQLite and PostgreSQL."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

from sqlalchemy import update

from postroom.models_inbound import InboundAttachment
from services.applicants import add_applicant
from services.inbound import add_mailbox, list_items, run_once
from services.orgs import add_org
from tests.rig.fixtures import Mailbox
from tests.sync.helpers import connect
from tests.web.signin import signed_in
from web import create_app

RESUME = b"%PDF-1.4 the resume of Ann Applicant"


def _application() -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Ann Applicant <ann@example.org>"
    msg["To"] = "jobs@example.test"
    msg["Subject"] = "My application"
    msg["Message-ID"] = "<apply-ann@example.org>"
    msg.set_content("Please find my CV attached.")
    msg.add_attachment(RESUME, maintype="application", subtype="pdf", filename="Ann CV.pdf")
    # an HTML "document" is kept as nothing a browser would run
    msg.add_attachment(b"<script>alert(1)</script>", maintype="application", subtype="msword", filename="x.doc")
    return msg.as_bytes()


def test_the_resume_downloads_from_the_applicants_page(config, sessions, mailbox: Mailbox) -> None:  # type: ignore[no-untyped-def]
    app = create_app(config)
    with sessions.begin() as s:
        org = add_org(s, "Alpha").id
        other = add_org(s, "Bravo").id
        applicant, _ = add_applicant(s, "Ann Applicant", ["ann@example.org"], org_id=org)
        applicant_id = applicant.id
    account_id = connect(config, sessions, mailbox, org)
    with sessions.begin() as s:
        add_mailbox(s, config, org, account_id)
    mailbox.append(_application())
    assert run_once(config, sessions).processed == 1
    with sessions.begin() as s:
        (item,) = list_items(s, org)
        # linking to the applicant is sync.inbound_routing's part (by sender); done by hand here
        s.execute(update(InboundAttachment).values(applicant_id=applicant_id))
    pdf, doc = sorted(item.attachments, key=lambda a: a.filename)

    alice = signed_in(app, "alice@alpha.test", org)
    page = alice.get(f"/applicants/{applicant_id}").get_data(as_text=True)
    assert "Documents" in page and f"/inbound/attachments/{pdf.id}" in page and "Ann CV.pdf" in page
    resp = alice.get(f"/inbound/attachments/{pdf.id}")
    assert resp.status_code == 200 and resp.data == RESUME
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = alice.get(f"/inbound/attachments/{doc.id}")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/octet-stream"

    bob = signed_in(app, "bob@bravo.test", other)
    assert bob.get(f"/inbound/attachments/{pdf.id}").status_code == 404
    assert bob.get("/inbound/attachments/999999").status_code == 404
    app.extensions["postroom"]["hits"].close()
