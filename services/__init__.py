"""What a user does: one function per action, called alike by the CLI, the web app and the API.

* :mod:`services.accounts` — connect, list and reconnect mailboxes; their health
* :mod:`services.applicants` — applicants and their email history
* :mod:`services.threads` — the conversations in a mailbox
* :mod:`services.outbox` — queue and send a message, list the outbox, retry
* :mod:`services.quarantine` — messages set aside, and trying them again
* :mod:`services.keys` — re-sealing stored credentials under a new key

Services take a session (or a sessionmaker, when they commit step by step) and the config,
and raise :class:`postroom.errors.UserError` subclasses naming the field at fault. They call
into :mod:`sync` for the engine's work (backfilling a new applicant's history, delivering a
queued message) and never print.
"""
