"""The base of an external service's payloads: the service's field names as on the wire, and the
fields we do not read kept (real services answer more than they document)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, str_strip_whitespace=True)


class OAuthError(Wire):
    """What an OAuth2 token endpoint answers a refused request with (RFC 6749 §5.2)."""

    error: str
    error_description: str | None = None
