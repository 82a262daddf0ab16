"""Logging setup: plain text or one JSON object per line, with the account id when known."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from postroom.config import LoggingConfig


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
