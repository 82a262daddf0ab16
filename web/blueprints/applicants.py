"""``/applicants``: the organisation's applicants — list and search (``?q=``), a page at a time,
add one (name, addresses one per line), read one's timeline (with the documents a processing
mailbox kept for them, downloaded from :mod:`web.blueprints.inbound_ui`), edit their name and addresses.

Each view parses its input, calls the service (:mod:`services.applicants`) and renders; an
applicant of another organisation answers 404 exactly like a missing one. A refused form shows
the service's sentence next to the field it names, with what was typed kept.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from postroom.errors import ApplicantError
from services.applicants import add_applicant, applicant_timeline, get_applicant, list_applicants, update_applicant
from services.inbound import applicant_documents
from web.auth import org_id

bp = Blueprint("applicants", __name__)
TIMELINE_PAGE = 100  # messages on one page of a timeline (1,000 at once took 60–80 ms to render)

PAGE = 25


def _sessions():  # type: ignore[no-untyped-def]
    return current_app.extensions["postroom"]["sessions"]


def _int_arg(name: str) -> int:
    try:
        return max(0, int(request.args.get(name, "0")))
    except ValueError:
        return 0


def _addresses(text: str) -> list[str]:
    """One address a line (commas and semicolons separate too, as people paste lists)."""
    return [a.strip() for line in text.splitlines() for a in line.replace(";", ",").split(",") if a.strip()]


def _field(exc: ApplicantError) -> str:
    """The form input an error is about (the service says ``email`` when adding)."""
    return "name" if exc.field == "name" else "addresses"


@bp.get("/applicants")
def index() -> str:
    return _index_page()


def _index_page(form: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> str:
    query = request.args.get("q", "").strip()[:200]
    with _sessions()() as s:
        page = list_applicants(s, org_id(), query=query or None, offset=_int_arg("offset"), limit=PAGE)
    return render_template("applicants/index.html", page=page, q=query, form=form or {}, errors=errors or {})


@bp.post("/applicants")
def add() -> str | tuple[str, int] | Response:
    form = {"name": request.form.get("name", ""), "addresses": request.form.get("addresses", "")}
    try:
        with _sessions().begin() as s:
            applicant, found = add_applicant(s, form["name"], _addresses(form["addresses"]), org_id())
            new_id, name = applicant.id, applicant.name
    except ApplicantError as exc:
        return _index_page(form, {_field(exc): str(exc)}), 400
    flash(f"{name} added; {found} message{'' if found == 1 else 's'} found in the mailboxes so far.", "ok")
    return redirect(url_for("applicants.show", applicant_id=new_id))


@bp.get("/applicants/<int:applicant_id>")
def show(applicant_id: int) -> str:
    with _sessions()() as s:
        try:
            applicant = get_applicant(s, org_id(), applicant_id)
            timeline = applicant_timeline(s, org_id(), applicant_id)
        except ApplicantError:
            abort(404)
        documents = applicant_documents(s, org_id(), applicant_id)
    # oldest first, a page at a time: the newest page unless ?start= asks for an earlier one
    newest = max(0, len(timeline) - TIMELINE_PAGE)
    start = min(max(0, request.args.get("start", newest, type=int) or 0), newest)
    shown = timeline[start : start + TIMELINE_PAGE]
    earlier = max(0, start - TIMELINE_PAGE) if start > 0 else None
    later = start + TIMELINE_PAGE if start + TIMELINE_PAGE < len(timeline) else None
    return render_template(
        "applicants/show.html",
        applicant=applicant,
        timeline=shown,
        start=start,
        total=len(timeline),
        earlier=earlier,
        later=later,
        documents=documents,
    )


@bp.route("/applicants/<int:applicant_id>/edit", methods=["GET", "POST"])
def edit(applicant_id: int) -> str | tuple[str, int] | Response:
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = {"name": request.form.get("name", ""), "addresses": request.form.get("addresses", "")}
        try:
            with _sessions().begin() as s:
                updated = update_applicant(
                    s, org_id(), applicant_id, name=form["name"], addresses=_addresses(form["addresses"])
                )
        except ApplicantError as exc:
            if exc.field == "applicant":
                abort(404)
            errors[_field(exc)] = str(exc)
        else:
            flash(f"{updated.name} saved.", "ok")
            return redirect(url_for("applicants.show", applicant_id=applicant_id))
    with _sessions()() as s:
        try:
            applicant = get_applicant(s, org_id(), applicant_id)
        except ApplicantError:
            abort(404)
    if not errors:
        form = {"name": applicant.name, "addresses": "\n".join(applicant.addresses)}
    page = render_template("applicants/edit.html", applicant=applicant, form=form, errors=errors)
    return (page, 400) if errors else page
