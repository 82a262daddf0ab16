"""The web app's blueprints, one per area; :func:`web.create_app` registers them.

* :mod:`web.blueprints.google_connect` — connect a Gmail mailbox through Google's consent.
* :mod:`web.blueprints.microsoft_connect` — connect a Microsoft 365 mailbox through Microsoft's consent.
"""
