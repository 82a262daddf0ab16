"""``/login`` and ``/logout``: signing in with an email address and a password
(:func:`services.users.sign_in`, rate limited there), signing out with a POST."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from services.users import SignInError, sign_in
from web.auth import WebUser, safe_next

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        sessions = current_app.extensions["postroom"]["sessions"]
        try:
            with sessions.begin() as s:
                try:
                    who = sign_in(s, form.email.data or "", form.password.data or "", request.remote_addr or "")
                except SignInError as exc:
                    error = str(exc)
                    s.commit()  # the failure counts towards the rate limit
                    raise
        except SignInError:
            return render_template("auth/login.html", form=form, error=error), 401  # type: ignore[return-value]
        session.clear()  # nothing from before sign-in carries over
        session.permanent = True
        login_user(WebUser(who))
        flash(f"Signed in as {who.email}.", "ok")
        return redirect(safe_next(request.args.get("next")) or url_for("dashboard.index"))
    if request.method == "POST":
        error = "Enter your email address and password." if not form.errors.get("csrf_token") else None
    return render_template("auth/login.html", form=form, error=error)


@bp.post("/logout")
def logout() -> Response:
    logout_user()
    session.clear()
    flash("You are signed out.", "ok")
    return redirect(url_for("auth.login"))
