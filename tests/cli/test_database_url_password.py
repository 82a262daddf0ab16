"""Issue 9, item 5: a mistyped database (or broker) URL never prints its password.

Each URL goes to the real `postroom` command line; whatever is wrong with it, the answer is one
sentence on stderr that shows the URL with its password as ***."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main

PASSWORD = "s3cret-Pa55"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bob:{PASSWORD}@127.0.0.1:1/x?bad=1",  # an option libpq does not know
        f"postgresql://bob:{PASSWORD}@127.0.0.1:1/x",  # nothing listens
        f"postgresql://bob:{PASSWORD}@no-such-host.invalid/x",  # no such host
        f"postgresql://bob@127.0.0.1:1/x?password={PASSWORD}",  # the password as a parameter
        f"postgresql://bob:{PASSWORD}@127.0.0.1:notaport/x",  # SQLAlchemy cannot parse it
        f"postgresql://bob:{PASSWORD}@[::1/x",
        f"postgresql://bob:{PASSWORD[:3]}/{PASSWORD[3:]}@127.0.0.1:1/x",  # an unescaped / in the password
        f"postgresql//bob:{PASSWORD}@db/x",  # not a URL at all
        f"host=db user=bob password={PASSWORD}",  # a libpq connection string, not a URL
        f"mysql://bob:{PASSWORD}@db/x",  # a driver that is not installed
        f"postgresql+psycopg2://bob:{PASSWORD}@db/x",
        f"postgresql+nodriver://bob:{PASSWORD}@db/x",  # no such driver
        f"sqlite://bob:{PASSWORD}@/x",
    ],
)
@pytest.mark.parametrize("command", [["db", "upgrade"], ["status"]])
def test_a_bad_database_url_is_one_sentence_without_its_password(
    url: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POSTROOM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("POSTROOM_SECRET_KEY", "k" * 24)
    monkeypatch.setenv("POSTROOM_DATABASE_URL", url)
    assert main(command) == 1
    out, err = capsys.readouterr()
    assert PASSWORD[3:] not in out + err and PASSWORD[:3] + "/" not in out + err
    assert err.startswith("postroom: error: ") and err.count("\n") == 1, err
    assert "***" in err, err  # the URL is shown, masked


def test_a_bad_broker_url_is_one_sentence_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POSTROOM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("POSTROOM_BROKER_URL", f"redis//:{PASSWORD}@redis.internal:6379/0")
    assert main(["status"]) == 1
    assert capsys.readouterr().err == (
        "postroom: error: Setting celery.broker_url must be a URL such as redis://host:6379/0, "
        "not 'redis//:***@redis.internal:6379/0'.\n"
    )
