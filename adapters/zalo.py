"""Canonical events → Zalo ZNS template messages (and their SMS fallback). Pure: no I/O.

- :func:`normalise_phone`: ``0912 345 678``, ``+84912345678``, ``84-912-345-678`` → ``84912345678``;
  the old 11-digit mobile prefixes (renumbered in 2018) are converted; anything that cannot
  be a Vietnamese mobile number is a :class:`MappingError` (dead letter, with the reason).
- :func:`render`: the template data of ``config/zalo.toml`` (read by :mod:`config.zalo_templates`)
  filled from the event (its JSON form, which the templates' dotted paths name), every parameter
  checked before anything is sent: present, not empty, within its ZNS type's cap (or a tighter
  ``max_length``), of its type's form, and without a link unless it is a button's ``url``. A refusal
  names the template, the parameter, its type and cap, never the value (it may be personal data).
- :func:`tracking_id`: derived from the event and the template, so a repeated send is
  recognisable (by the relay's receipts and at Zalo).
- :func:`quiet_until`: when a message may go, given the quiet hours (default 21:00–07:00).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from config.routing import lookup_path
from schemas.events import Event, event_json
from schemas.vietnam import VN_TZ, vnd
from schemas.zalo import LINK, PARAM_TYPES, PLACEHOLDER, TemplateConfig, TemplateSpec

MOBILE = re.compile(r"^84(3|5|7|8|9)\d{8}$")
# Mobile prefixes renumbered in 2018 (11 digits → 10): old → new, after the leading 0.
OLD_PREFIXES = {
    "162": "32", "163": "33", "164": "34", "165": "35", "166": "36", "167": "37", "168": "38", "169": "39",
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    "186": "56", "188": "58", "199": "59",
}


class MappingError(ValueError):
    """The event cannot become this message (a bad phone, an empty parameter): an operator looks at it."""


def normalise_phone(raw: str) -> str:
    """A Vietnamese mobile number in Zalo's international form without plus (``84912345678``)."""
    digits = re.sub(r"[\s.\-()]", "", raw or "")
    if digits.startswith("+"):
        digits = digits[1:]
    if not digits.isdigit():
        raise MappingError("the phone number has characters other than digits, spaces, dots, dashes or a +")
    if digits.startswith("84"):
        digits = "0" + digits[2:]
    if len(digits) == 11 and digits.startswith("0") and digits[1:4] in OLD_PREFIXES:
        digits = "0" + OLD_PREFIXES[digits[1:4]] + digits[4:]
    number = "84" + digits[1:] if digits.startswith("0") else digits
    if not MOBILE.match(number):
        raise MappingError(f"not a Vietnamese mobile number ({len(digits)} digits, prefix {digits[:3]}…)")
    return number


def tracking_id(event_id: str, template_id: str) -> str:
    """The same event and template always give the same id (48 characters at most, as ZNS allows)."""
    return "mc" + hashlib.sha256(f"{event_id}|{template_id}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Message:
    """What goes to Zalo for one event."""

    phone: str
    template_id: str
    data: dict[str, str]
    tracking_id: str
    sms: str | None


def message_for(event: Event, config: TemplateConfig) -> Message:
    """The ZNS message for ``event``; :class:`MappingError` when it cannot be made."""
    spec = config.templates.get(event.type)
    if spec is None:
        raise MappingError(f"no Zalo template for {event.type} in the templates file")
    applicant = event.applicant
    if not applicant.zalo_consent:
        raise MappingError("the citizen has not consented to Zalo messages")
    if not applicant.phone:
        raise MappingError("the applicant has no phone number")
    phone = normalise_phone(applicant.phone)
    values = event_json(event)  # once, for the template data and the SMS text alike
    data = _render(spec, values, config.labels)
    sms = _fill(spec.sms, values, config.labels) if spec.sms else None
    return Message(phone, spec.template_id, data, tracking_id(event.event_id, spec.template_id), sms)


def render(spec: TemplateSpec, event: Event, labels: Mapping[str, str]) -> dict[str, str]:
    """Every parameter of the template, filled and checked."""
    return _render(spec, event_json(event), labels)


def fill(text: str, event: Event, labels: Mapping[str, str]) -> str:
    """``text`` with each ``{path[:format][|fallback]}`` replaced from the event."""
    return _fill(text, event_json(event), labels)


# The templates name the event's fields by dotted paths of its JSON form ({data.payment_url}), the form the
# one-stop software sends and the ledger stores: they are filled from that form.

def _render(spec: TemplateSpec, values: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, text in spec.data.items():
        value = _fill(text, values, labels).strip()
        where = f"template {spec.template_id}: parameter {name}"
        if not value:
            raise MappingError(f"{where} is empty for this event")
        kind, cap = spec.param_type(name)
        if len(value) > cap:
            if name not in spec.shorten:
                raise MappingError(f"{where} ({kind}, at most {cap} characters) is {len(value)} characters long")
            value = value[-cap:].lstrip()
        if kind != "url" and LINK.search(value):
            raise MappingError(f"{where} ({kind}) holds a link: a link goes only in a button's url parameter "
                               "(template review refuses one in text)")
        form = PARAM_TYPES[kind].form
        if form is not None and not form.fullmatch(value):
            raise MappingError(f"{where} is not of type {kind} ({PARAM_TYPES[kind].looks})")
        out[name] = value
    return out


def _fill(text: str, values: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        path, fmt, fallback = match.group(1), match.group(2), match.group(3)
        value = lookup_path(values, path)
        if value in (None, "", []):
            if fallback is not None:
                return fallback
            return ""
        return _format(value, fmt, labels)

    return PLACEHOLDER.sub(one, text)


def _format(value: Any, fmt: str | None, labels: Mapping[str, str]) -> str:
    if fmt in ("date", "datetime"):
        moment = datetime.fromisoformat(str(value)).astimezone(VN_TZ)
        return moment.strftime("%d/%m/%Y" if fmt == "date" else "%H:%M %d/%m/%Y")
    if fmt == "money":
        return vnd(int(value))
    if fmt == "join":
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if fmt == "label":
        return labels.get(str(value), str(value))
    return str(value)


@dataclass(frozen=True)
class QuietHours:
    """No message between ``start`` and ``end`` (Vietnam time); the span may cross midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """``"21:00-07:00"``; ``""`` or ``"none"`` for none."""
        if not text or text.strip().lower() == "none":
            return None
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not match:
            raise ValueError(f"quiet hours must look like 21:00-07:00, not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        return cls(time(h1, m1), time(h2, m2))

    def until(self, now: datetime) -> datetime | None:
        """When the quiet period that ``now`` falls in ends (aware), or ``None`` when messages may go."""
        local = now.astimezone(VN_TZ)
        clock = local.time()
        crosses = self.start > self.end
        inside = (clock >= self.start or clock < self.end) if crosses else (self.start <= clock < self.end)
        if not inside:
            return None
        end = datetime.combine(local.date(), self.end, VN_TZ)
        if end <= local:
            end += timedelta(days=1)
        return end


def next_midnight(now: datetime) -> datetime:
    """The next 00:00 in Vietnam, when a daily quota starts again."""
    local = now.astimezone(VN_TZ)
    return datetime.combine(local.date() + timedelta(days=1), time(0, 0), VN_TZ)
