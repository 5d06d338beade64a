"""Logging for long-running processes: every line goes through the redaction, access log included."""

from __future__ import annotations

from typing import Any


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own loggers (``uvicorn.error``, ``uvicorn.access``) with redacting formatters.

    uvicorn installs its handlers from this dict, so a filter on the root logger would never see
    its access lines (``GET /status?token=…``); the formatter here redacts the whole formatted line.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": "connectors.kernel.redact.RedactingFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "INFO"},
    }
