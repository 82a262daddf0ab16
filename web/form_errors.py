"""A user's mistake on a form, shown where they will look for it: the error's one sentence next to
the field it names, with every ``{field}`` in it written as that field's label.

>>> from postroom.errors import AccountError
>>> form_errors(AccountError("{imap_port} must be a TCP port.", "imap_port"), {"imap_port": "IMAP port"})
{'imap_port': 'IMAP port must be a TCP port.'}
>>> form_errors(AccountError("Something else went wrong."), {"imap_port": "IMAP port"})
{'form': 'Something else went wrong.'}
"""

from __future__ import annotations

from collections.abc import Mapping

from postroom.errors import UserError

__all__ = ["form_errors"]


def form_errors(exc: UserError, labels: Mapping[str, str]) -> dict[str, str]:
    """``{field: sentence}`` for the form whose fields are ``labels`` (name → label); an error
    about no field of this form goes under ``"form"``, shown above the form."""
    sentence = exc.sentence(lambda field: labels.get(field, field.replace("_", " ")))
    return {exc.field if exc.field is not None and exc.field in labels else "form": sentence}
