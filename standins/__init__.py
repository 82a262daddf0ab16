"""Local stand-ins for the cloud mail APIs Postroom talks to.

A stand-in is a small in-memory server that speaks a provider's real wire
protocol on 127.0.0.1, so the tests (and a demo mode) drive the real client
libraries against it, not mocks of them. Each one models the provider's awkward
semantics on purpose: expired sync cursors, throttling with Retry-After,
partial failures inside a batch, revoked grants.

The rule that keeps a stand-in honest: every response it sends is validated
against the provider's published schema (for Gmail, the discovery document that
ships inside google-api-python-client), and so is every request body it
accepts. A response that violates the schema becomes a 500 and is recorded, so
a test that relies on a field the real service would never send fails.

* :mod:`standins.httpserver` serves any WSGI app on a free loopback port.
* :mod:`standins.discovery` reads discovery documents and validates JSON against them.
* :mod:`standins.gmail_store` is the Gmail mailbox model; :mod:`standins.gmail`
  the Gmail REST API, batch and token endpoints over it.
"""
