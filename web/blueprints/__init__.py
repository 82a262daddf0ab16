"""The web app's blueprints, one per area; :func:`web.create_app` registers them.

* :mod:`web.blueprints.google_connect` — connect a Gmail mailbox through Google's consent.
"""
