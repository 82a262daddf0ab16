"""redact_url: every URL a message shows has its password masked, even URLs no parser accepts."""

from __future__ import annotations

import pytest

from postroom.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cret@db/x?bad=1", "postgresql://bob:***@db/x?bad=1"),
        ("postgresql+psycopg://bob:s3cret@db:5432/x", "postgresql+psycopg://bob:***@db:5432/x"),
        ("postgresql://bob:s3/cret@db/x", "postgresql://bob:***@db/x"),  # an unescaped / in the password
        ("postgresql://bob:s3:cr@et@db/x", "postgresql://bob:***@db/x"),  # unescaped : and @
        ("postgresql://bob:s3?cret@db/x", "postgresql://bob:***@db/x"),
        ("postgresql://bob:s3#cret@db/x", "postgresql://bob:***@db/x"),
        ("postgresql://bob:s3cret@db:notaport/x", "postgresql://bob:***@db:notaport/x"),
        ("postgresql://bob:s3cret@[::1/x", "postgresql://bob:***@[::1/x"),
        ("postgresql//bob:s3cret@db/x", "postgresql//bob:***@db/x"),  # no ://
        ("postgresql:bob:s3cret@db/x", "postgresql:***@db/x"),
        ("bob:s3cret@db/x", "bob:***@db/x"),
        ("postgresql://bob@db/x?password=s3cret&sslmode=require", "postgresql://bob@db/x?password=***&sslmode=require"),
        ("postgresql://bob@db/x?sslpassword=s3cret", "postgresql://bob@db/x?sslpassword=***"),
        ("host=db user=bob password='s3 cret' dbname=x", "host=db user=bob password=*** dbname=x"),  # libpq key=value
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("amqp://guest:s3cret@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
        # nothing to hide: unchanged
        ("postgresql://bob@db:5432/x", "postgresql://bob@db:5432/x"),
        ("sqlite:////var/lib/postroom/postroom.db", "sqlite:////var/lib/postroom/postroom.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_password_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3" not in redact_url(url)
