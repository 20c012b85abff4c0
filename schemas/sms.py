"""Payloads of the SMS brandname gateway: the fallback when a citizen's phone has no Zalo account.

Every real gateway (the carriers' and the resellers') has its own contract; the simulator in
``sandbox/sms.py`` defines a generic one and this module holds what its connector and simulator
share: ``POST {base}/api/v1/sms/send`` (:data:`SEND_PATH`) with ``Authorization: Bearer <api_key>`` and
``{"brandname", "phone", "message", "request_id"}``, answered by :class:`SmsAnswer`. A province's
gateway that names things differently changes this module, the connector and the simulator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SEND_PATH = "/api/v1/sms/send"
MAX_LENGTH = 612  # four concatenated messages without diacritics

# Answer codes (``code``).
OK, BAD_REQUEST, BAD_BRANDNAME, BAD_PHONE, BAD_MESSAGE = "00", "11", "12", "13", "14"


class SmsAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str | None = None
    sms_id: str | None = None
