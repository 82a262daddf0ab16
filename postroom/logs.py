"""Logging setup: plain text or one JSON object per line, with the account id when known.

Logs and stored error texts (``last_error``, quarantine reasons) never carry message
content or SQL parameters: :func:`error_summary` is the one way an exception becomes a
sentence for them, and the engine is created with ``hide_parameters`` (postroom.db).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime

from postroom.config import LoggingConfig

SUMMARY_LIMIT = 300


def where(exc: BaseException) -> str:
    """The traceback of ``exc`` without its message (which may quote content or SQL
    parameters): enough to find a bug, nothing to leak."""
    return "Traceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__)).rstrip()


def error_summary(exc: BaseException) -> str:
    """``"ClassName: first line of the message"``, cut to a few hundred characters.

    For a database error it is the driver's error and its first line only: never the SQL
    statement, its parameters (which hold message content) or the DETAIL lines that
    PostgreSQL fills with the offending values.

    >>> error_summary(ValueError("bad value\\nsecond line with content"))
    'ValueError: bad value'
    """
    inner = getattr(exc, "orig", None)
    if isinstance(inner, BaseException):  # a DBAPI error wrapped by SQLAlchemy
        exc = inner
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(text) > SUMMARY_LIMIT:
        text = text[: SUMMARY_LIMIT - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "account_id", None) is not None:
            data["account_id"] = record.account_id  # type: ignore[attr-defined]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        account = getattr(record, "account_id", None)
        prefix = f"[account {account}] " if account is not None else ""
        record.message = record.getMessage()
        stamp = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {record.name}: {prefix}{record.message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(cfg: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.format == "json" else TextFormatter())
    root = logging.getLogger("postroom")
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    root.propagate = False
