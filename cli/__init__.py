"""The ``postroom`` command: the top layer, above the services and the worker it starts.

Each command group lives in a module of its own that builds its part of the argument parser
and holds its handlers (:mod:`cli.accounts`, :mod:`cli.applicants`, :mod:`cli.mail` for
syncing and threads, :mod:`cli.outbox` for sending, :mod:`cli.running` for the worker, the
web app and Celery, :mod:`cli.quarantine`, :mod:`cli.keys`, :mod:`cli.db`); :mod:`cli.main`
puts them together. Every command has ``--help``; commands that print data take ``--json``.
Errors go to stderr as one sentence with exit status 1 (2 for a malformed command line): a
:class:`postroom.errors.UserError` names its field as this command's flag.
"""
