"""What the backends have in common, written once.

* :mod:`~providers.common.backend` -- :class:`Backend`: ``open``, the context manager, and
  taking nothing from the config unless a backend says what it takes;
* :mod:`~providers.common.cursors` -- the JSON form of every backend's sync cursor (``"v": 1``);
* :mod:`~providers.common.messages` -- IMAP-style flags from read/flagged/draft/answered states,
  and the RFC 5322 header block rebuilt from the properties of APIs that keep no raw headers
  (Graph, EWS);
* :mod:`~providers.common.retry` -- the HTTP backends' (Gmail, Graph) retry policy and batch loop;
* :mod:`~providers.common.http` -- requests for msal with the CA passed per request, and whether
  a failed request may have reached the server.
"""
