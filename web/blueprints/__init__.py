"""The web app's pages, one blueprint per area; :func:`web.create_app` registers them. Every view
is thin: it parses the request, calls one :mod:`services` function with the signed-in user's
organisation (:func:`web.auth.org_id`) and renders a template of ``web/templates/<area>/``.

* :mod:`~web.blueprints.auth` — ``/login``, ``/logout``.
* :mod:`~web.blueprints.dashboard` — ``/``.
* :mod:`~web.blueprints.mailboxes` — ``/mailboxes``: health, live initial-sync progress, reconnect.
* :mod:`~web.blueprints.connect` — ``/connect``: Google, Microsoft 365, or IMAP/SMTP with the
  server settings guessed from the address.
* :mod:`~web.blueprints.applicants` — ``/applicants``: list, search, add, edit, the timeline.
* :mod:`~web.blueprints.threads` — ``/threads/<id>``.
* :mod:`~web.blueprints.messages` — ``/messages/<id>``: sanitised mail in a sandboxed frame,
  images on request, attachments.
* :mod:`~web.blueprints.images` — ``/img/<sig>``: the signed image proxy.
* :mod:`~web.blueprints.compose` — ``/compose``: compose and reply, live preview, tracking, invitations.
* :mod:`~web.blueprints.templates_ui` — ``/templates``: the editor and each template's results.
* :mod:`~web.blueprints.outbox_ui` — ``/outbox``: states, uncertain sends to check.
* :mod:`~web.blueprints.inbound_ui` — ``/inbound``: processing mailboxes (designate, run now),
  what they took (filter by status, retry a failed item), their attachments to download.
* :mod:`~web.blueprints.webhooks_ui` — ``/webhooks``: subscriptions (admins add, rotate, delete;
  the secret shown once) and the delivery log.
* :mod:`~web.blueprints.google_connect` — connect a Gmail mailbox through Google's consent.
* :mod:`~web.blueprints.microsoft_connect` — connect a Microsoft 365 mailbox through Microsoft's consent.
"""
