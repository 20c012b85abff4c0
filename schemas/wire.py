"""The base of an external service's payloads: the service's field names as on the wire, and the
fields we do not read kept (real services answer more than they document); and the text no payload may
carry into the ledger (:func:`unstorable`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, str_strip_whitespace=True)


class OAuthError(Wire):
    """What an OAuth2 token endpoint answers a refused request with (RFC 6749 §5.2)."""

    error: str
    error_description: str | None = None


def unstorable(data: Any) -> list[tuple[str | int, ...]]:
    """Where JSON data (keys included) holds text no ledger column can store: a NUL (PostgreSQL refuses it in
    text) or a lone surrogate (``\\ud800`` in JSON is no character, and UTF-8 cannot encode it). Each place is the
    path to the value, or to the object whose key it is: never the text itself."""
    found: list[tuple[str | int, ...]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]  # no recursion: JSON nests as deep as its parser
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if not storable(node):
                found.append(path)
        elif isinstance(node, dict):
            for key, value in node.items():
                if storable(key):
                    stack.append(((*path, key), value))
                else:
                    found.append(path)
        elif isinstance(node, list):
            stack.extend(((*path, index), value) for index, value in enumerate(node))
    return sorted(set(found), key=lambda p: [str(part) for part in p])


def storable(text: str) -> bool:
    """Whether ``text`` holds neither a NUL nor a lone surrogate (see :func:`unstorable`)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
