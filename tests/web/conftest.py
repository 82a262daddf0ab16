"""Fixtures of the API tests: ``api`` (a recruiter of the default organisation, with a token) and
``other`` (a user of another organisation, with a token of their own), over the module's ``app``."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.web.api_client import ApiClient, api_client, new_org


@pytest.fixture
def api(app: Flask) -> ApiClient:
    return api_client(app)


@pytest.fixture
def other(app: Flask) -> ApiClient:
    """A user of another organisation, with a token of their own."""
    return api_client(app, "someone@other.example", new_org(app))
