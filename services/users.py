"""Users of the web app and their API tokens: adding them, signing in, the sign-in rate limit.

* Passwords are hashed with argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), a memory-hard
  scheme, and rehashed on sign-in when the parameters change. A password is 10–1,000
  characters; nothing else about it is imposed (NIST SP 800-63B).
* Sign-in is rate limited from the database, so it holds across web processes: after
  ``MAX_PER_EMAIL`` failures for one address, or ``MAX_PER_IP`` from one client, within
  ``WINDOW``, sign-in is refused for that address or client until the window has passed —
  even with the right password, and with the same sentence whether the address exists or not.
* An API token is 256 random bits shown once (``pr_`` + 43 characters); only its SHA-256 is
  stored (a hash of that much entropy needs no salt or stretching).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from postroom.addresses import normalise_address
from postroom.errors import UserError
from postroom.models import ApiToken, LoginFailure, Organisation, User, utcnow
from postroom.states import UserRole

MAX_PER_EMAIL = 5
MAX_PER_IP = 30
WINDOW = timedelta(minutes=15)
TOKEN_PREFIX = "pr_"
_hasher = PasswordHasher()
# verified against when the address is unknown, so both answers take the same time
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class UserAccountError(UserError):
    """A user request that cannot be carried out: a malformed address or role, a password too
    short, an address another user has, a user or organisation that does not exist."""


class SignInError(UserError):
    """Sign-in refused: wrong address or password, or too many attempts."""


@dataclass(frozen=True)
class SignedIn:
    """Who signed in (or whose token was presented)."""

    id: int
    org_id: int
    email: str
    name: str
    role: UserRole
    session_epoch: int
    demo: bool = False  # their organisation is the demo one (known when signed in to the web app)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "org_id": self.org_id, "email": self.email, "name": self.name, "role": self.role.value}


def _email(value: str) -> str:
    email = normalise_address(value or "")
    if not email or "@" not in email or len(email) > 320:
        raise UserAccountError(f"{{email}} must be an email address, not '{value}'.", field="email")
    return email


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise UserAccountError("{password} must be at least 10 characters long.", field="password")
    if len(password) > 1000:
        raise UserAccountError("{password} must be at most 1,000 characters long.", field="password")


def _signed_in(user: User) -> SignedIn:
    return SignedIn(user.id, user.org_id, user.email, user.name, UserRole(user.role), user.session_epoch)


def add_user(
    session: Session, org_id: int, email: str, password: str, role: str = UserRole.RECRUITER, name: str = ""
) -> User:
    """A new user of organisation ``org_id``; the address is unique across organisations."""
    if session.get(Organisation, org_id) is None:
        raise UserAccountError(f"There is no organisation {org_id}.", field="org")
    try:
        user_role = UserRole(role)
    except ValueError:
        raise UserAccountError(f"{{role}} must be admin or recruiter, not '{role}'.", field="role") from None
    address = _email(email)
    _check_password(password)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise UserAccountError(f"A user with the address {address} exists already.", field="email")
    user = User(org_id=org_id, email=address, name=" ".join(name.split())[:200], password_hash=_hasher.hash(password))
    user.role = user_role.value
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user_id: int, password: str) -> None:
    """A new password; sessions signed in before it end (their epoch no longer matches)."""
    _check_password(password)
    user = session.get(User, user_id)
    if user is None:
        raise UserAccountError(f"There is no user {user_id}.", field="user")
    user.password_hash = _hasher.hash(password)
    user.session_epoch += 1


def sign_in(session: Session, email: str, password: str, ip: str, now: datetime | None = None) -> SignedIn:
    """The user whose address and password these are, or :class:`SignInError`. Each failure
    is recorded (the caller commits it even when this raises)."""
    now = now or utcnow()
    address = normalise_address(email or "")[:320]
    since = now - WINDOW
    by_email = session.scalar(
        select(func.count()).select_from(LoginFailure).where(LoginFailure.email == address, LoginFailure.at >= since)
    )
    by_ip = session.scalar(
        select(func.count()).select_from(LoginFailure).where(LoginFailure.ip == ip, LoginFailure.at >= since)
    )
    if (by_email or 0) >= MAX_PER_EMAIL or (by_ip or 0) >= MAX_PER_IP:
        raise SignInError("Too many failed sign-ins; please wait 15 minutes and try again.")
    user = session.scalar(select(User).where(User.email == address))
    ok: bool
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password or "")
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or not user.active:
        session.add(LoginFailure(email=address, ip=ip[:64], at=now))
        raise SignInError("That email address and password do not match an account.")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    session.execute(delete(LoginFailure).where(LoginFailure.email == address))
    return _signed_in(user)


def load_user(session: Session, user_id: int) -> SignedIn | None:
    """The signed-in user of the web app, with whether their organisation is the demo one (one
    query per request, not one more for the layout's *Demo* label)."""
    row = session.execute(
        select(User, Organisation.demo).join(Organisation, Organisation.id == User.org_id).where(User.id == user_id)
    ).first()
    if row is None or not row[0].active:
        return None
    return replace(_signed_in(row[0]), demo=bool(row[1]))


def create_token(session: Session, user_id: int) -> str:
    """A new API token for ``user_id``: returned once, stored as its SHA-256."""
    if session.get(User, user_id) is None:
        raise UserAccountError(f"There is no user {user_id}; 'postroom users list' shows them.", field="user")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user_id, token_hash=_digest(token), prefix=token[:10]))
    session.flush()
    return token


def user_for_token(session: Session, token: str, now: datetime | None = None) -> SignedIn | None:
    """The user a bearer token acts as, or None for a token that is unknown or revoked."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    row = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == _digest(token))
    ).first()
    if row is None:
        return None
    api_token, user = row
    if api_token.revoked_at is not None or not user.active:
        return None
    now = now or utcnow()
    if api_token.last_used_at is None or now - api_token.last_used_at > timedelta(minutes=1):
        api_token.last_used_at = now  # at most one write a minute per token
    return _signed_in(user)


def list_users(session: Session, org_id: int) -> list[SignedIn]:
    return [_signed_in(u) for u in session.scalars(select(User).where(User.org_id == org_id).order_by(User.id))]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
