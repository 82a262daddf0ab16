"""Errors a user can cause: one root, :class:`UserError`.

A user error's message is one sentence for a person. Where it is about an input, it names the
input by its *field* (``imap_security``, ``ews_url``, ``to``) in braces, and each face renders
the field its own way: the CLI as its flag (``--imap-security``), the web app as the form's
label, the JSON API as a JSON pointer (``/imap_security``). ``str(error)`` names the fields
as they are.

>>> err = AccountError("{imap_security} must be one of ssl, starttls, none, not 'tls'.", field="imap_security")
>>> str(err)
"imap_security must be one of ssl, starttls, none, not 'tls'."
>>> err.sentence(lambda field: "--" + field.replace("_", "-"))
"--imap-security must be one of ssl, starttls, none, not 'tls'."
>>> str(AccountError("'{x}' is not an email address."))
"'{x}' is not an email address."
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class UserError(Exception):
    """Something a user asked for cannot be done, or a setting they made is wrong; the
    message says why in one sentence. ``field`` is the input at fault, if there is one."""

    def __init__(self, message: str, field: str | None = None, *, also: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.template = message
        self.field = field
        self.fields = frozenset((field, *also) if field else also)  # the names in braces to render

    def sentence(self, name: Callable[[str], str] = lambda field: field) -> str:
        """The message with every ``{field}`` named by ``name`` (only the error's own fields:
        braces that came with a user's input stay as they are)."""
        return _FIELD.sub(lambda m: name(m.group(1)) if m.group(1) in self.fields else m.group(0), self.template)

    def __str__(self) -> str:
        return self.sentence()


class ConfigError(UserError):
    """A setting is missing, malformed or out of range; the message names it."""


class AccountError(UserError):
    """A mail-account request that cannot be carried out: a malformed setting, an account
    that exists already or does not exist, a sign-in that belongs to someone else."""


class ApplicantError(UserError):
    """An applicant request that cannot be carried out: no name, a malformed address, an
    address another applicant has, an applicant that does not exist."""


class OutboxError(UserError):
    """A send request that cannot be carried out, or a message that was not (or may not
    have been) sent: a malformed recipient or subject, an unknown account or message."""
