"""structlog set-up: JSON when not on a terminal, key-value on one; personal data and secrets masked."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from schemas.privacy import mask_text, mask_value

_SENSITIVE_KEYS = {
    "phone", "id_number", "name", "full_name", "email", "street", "address", "applicant",
    "secret", "password", "token", "access_token", "refresh_token", "authorization", "session",
}


def _mask_personal(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key in _SENSITIVE_KEYS and value is not None:
            event_dict[key] = mask_value(str(value)) if not isinstance(value, dict) else "***"
        elif isinstance(value, str) and key not in ("event", "timestamp", "level", "logger"):
            event_dict[key] = mask_text(value)
    return event_dict


# One list, changed in place by every configuration: a logger caches its processors on first use (cheaper), and
# would otherwise keep the chain of the configuration it first met.
_PROCESSORS: list[Any] = []


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (again, in a process that changes its settings)."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_personal,
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
