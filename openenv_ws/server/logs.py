"""The server's log output: text lines (default) or one JSON object per line (``--log-format json``).

Every logger, uvicorn's included, goes through one root handler (uvicorn is started without
its own logging config), so one format applies and one filter keeps secrets out: with a
token configured, a record that would contain it (say an access-log line of a URL someone
put it in) has it replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from ..record import utc_iso

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields, "exception"}``, one per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class Redact(logging.Filter):
    """Replaces each secret in a record's message by ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def configure(level: str = "info", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Route every log record to stderr in ``fmt`` (``text`` or ``json``), secrets redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(Redact(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
