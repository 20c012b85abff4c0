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
# Identifiers that are not personal data, kept as they are whatever they look like (an event id may be all digits).
_IDENTIFIER_KEYS = {
    "event_id", "event_ids", "event_pk", "delivery_id", "attempt_id", "idempotency_key", "dossier_code",
    "unit_code", "procedure_code", "receipt_no", "fee_id", "bill_code", "transaction_id", "transfer_ids",
    "order_number", "order_numbers", "external_ref", "sha256", "timestamp", "level", "logger",
}


def _masked(key: str, value: Any) -> Any:
    """A log value with what is personal masked: by its key first (and its parents' keys), then free text
    by pattern (:func:`~schemas.privacy.mask_text`), into dicts and lists."""
    if value is None or key in _IDENTIFIER_KEYS:
        return value
    if key in _SENSITIVE_KEYS:
        return "***" if isinstance(value, dict | list | tuple) else mask_value(str(value))
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(key, v) for v in value]
    return value


def _mask_personal(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _masked(key, value)
    return event_dict


# One list, changed in place by every configuration: a logger caches its processors on first use (cheaper), and
# would otherwise keep the chain of the configuration it first met.
_PROCESSORS: list[Any] = []
# The level, read by the first processor rather than built into the logger's class for the same reason: a logger
# first used under WARNING would drop its info lines for the life of the process, whatever came after.
_THRESHOLD = [logging.INFO]
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO, "warning": logging.WARNING,
                  "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
                  "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


def _at_level(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _METHOD_LEVELS.get(method, logging.INFO) < _THRESHOLD[0]:
        raise structlog.DropEvent
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (again, in a process that changes its settings)."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    _THRESHOLD[0] = logging.getLevelName(level.upper())
    _PROCESSORS[:] = [
        _at_level,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_personal,  # after the traceback is text: an exception's message may quote a citizen
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),  # the level is _at_level's
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
