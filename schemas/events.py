"""The canonical dossier event: what the one-stop software sends and what callbacks produce.

Every event carries the envelope of :class:`EventBase` (id, type, unit, dossier,
procedure, per-dossier ``sequence``, tz-aware ``occurred_at``, applicant) and a
type-specific ``data`` block. :data:`Event` is the discriminated union over ``type``, made of the
groups the services take (:data:`DossierEvent`, :data:`PostalRequest`, :data:`TransferAnswer` ...);
:data:`EVENT_ADAPTER` validates one event, :data:`EVENT_BATCH_ADAPTER` a list. The ledger stores an
event as :func:`canonical_json` of :func:`event_json`, and the relay hands it on as the model.

Code shapes (unit, dossier, procedure) follow docs/domain.md; provinces format them a
little differently, so :func:`parse_event` checks them against the :class:`CodePatterns` it is
given (the settings' ``code_patterns``; the national shapes by default), carried to the validators
in pydantic's validation context. Codes are checked once, where they enter the relay: an event
read back from the ledger, or built on one's envelope, is parsed with :func:`parse_stored`, which
does not check them again (they may have come in under patterns since changed), nor the years of its times.

Every time is :data:`Time`: tz-aware, in the years of :mod:`schemas.vietnam` as written. Text holds no NUL
and no lone surrogate (no ledger column stores them): the intake refuses those before validating
(:func:`schemas.wire.unstorable`). :func:`event_schema` is the JSON schema of all this, the codes' patterns
included, so that an event made from it is taken.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar, overload

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas.privacy import PersonalStr
from schemas.vietnam import FIRST_YEAR, LAST_YEAR, in_years

# Electronic identifier codes (Decision 20/2020/QĐ-TTg): 000.00.01.H49, G01.123.45.67 ...
DEFAULT_UNIT_PATTERN = r"^[A-Z0-9]{2,4}(\.[A-Z0-9]{2,4}){2,4}$"
# Unit-prefixed dossier code: 000.21.00.H49-240315-0042 (ASCII digits: Python's \d takes Arabic-Indic ones too)
DEFAULT_DOSSIER_PATTERN = r"^[A-Za-z0-9.]{3,40}-[0-9]{6}-[0-9]{1,7}$"
# Procedure codes: 1.001234.000.00.00.H49 or 2.002492
DEFAULT_PROCEDURE_PATTERN = r"^[0-9]\.[0-9]{5,6}(\.[A-Z0-9]{1,4}){0,4}$"


@dataclass(frozen=True)
class CodePatterns:
    """The shapes unit, dossier and procedure codes must have (attributes named as the event's fields)."""

    unit_code: re.Pattern[str] = re.compile(DEFAULT_UNIT_PATTERN)
    dossier_code: re.Pattern[str] = re.compile(DEFAULT_DOSSIER_PATTERN)
    procedure_code: re.Pattern[str] = re.compile(DEFAULT_PROCEDURE_PATTERN)

    @classmethod
    def of(cls, unit: str | None = None, dossier: str | None = None, procedure: str | None = None) -> CodePatterns:
        """A province's own formats (regular expressions); one not given keeps the national shape."""
        national = cls()
        return cls(
            re.compile(unit) if unit else national.unit_code,
            re.compile(dossier) if dossier else national.dossier_code,
            re.compile(procedure) if procedure else national.procedure_code,
        )


DEFAULT_CODE_PATTERNS = CodePatterns()
# Keys of the validation context the code validators read.
_PATTERNS = "code_patterns"
_CODES_CHECKED = "codes_checked"


def _check_code(kind: str, value: str, info: ValidationInfo) -> str:
    context = info.context or {}
    if context.get(_CODES_CHECKED):
        return value
    pattern: re.Pattern[str] = getattr(context.get(_PATTERNS, DEFAULT_CODE_PATTERNS), kind)
    if not pattern.match(value):
        raise ValueError(f"{kind} {value!r} does not match the configured pattern {pattern.pattern}")
    return value


def _in_years(value: datetime, info: ValidationInfo) -> datetime:
    if in_years(value) or (info.context or {}).get(_CODES_CHECKED):
        return value
    raise PydanticCustomError("datetime_years", "a time in the years {first} to {last}",
                              {"first": FIRST_YEAR, "last": LAST_YEAR})


# RFC 3339 in the years FIRST_YEAR–LAST_YEAR: what the document promises (pydantic reads more forms: Unix seconds,
# a space for the T); the validator holds every form to the years.
TIME_PATTERN = (r"^(19[0-9]{2}|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
                r":[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
Time = Annotated[AwareDatetime, AfterValidator(_in_years),
                 WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIME_PATTERN})]
"""A time zone-aware time in the years of :mod:`schemas.vietnam` (checked where the event enters the relay)."""
EventId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:\-]+$")]
MONEY_DIGITS = 15
Money = Annotated[Decimal, Field(ge=0, max_digits=MONEY_DIGITS, decimal_places=0), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": 10**MONEY_DIGITS - 1},
    {"type": "string", "pattern": f"^[0-9]{{1,{MONEY_DIGITS}}}$"}]})]
"""Whole đồng, a JSON number or its digits."""
ShortText = Annotated[str, Field(max_length=2000)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Address(Model):
    street: PersonalStr | None = Field(None, max_length=300)
    ward: str | None = Field(None, max_length=100)
    district: str | None = Field(None, max_length=100)
    province: str | None = Field(None, max_length=100)


class Applicant(Model):
    kind: Literal["citizen", "business"] = "citizen"
    name: PersonalStr = Field(min_length=1, max_length=200)
    id_number: PersonalStr | None = Field(None, max_length=20)
    phone: PersonalStr | None = Field(None, max_length=20)
    email: PersonalStr | None = Field(None, max_length=200)
    zalo_consent: bool = False
    address: Address | None = None


class FeeLine(Model):
    code: str = Field(min_length=1, max_length=50)
    name: str = Field(max_length=300)
    amount: Money


class Document(Model):
    name: str = Field(max_length=300)
    url: str | None = Field(None, max_length=2000)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(None, ge=0, le=2**63 - 1)  # the exchange's xsd:long


class ProcessingStep(Model):
    department: str = Field(max_length=200)
    handler: PersonalStr | None = Field(None, max_length=200)
    title: str | None = Field(None, max_length=200)
    note: ShortText | None = None
    started_at: Time | None = None
    due_at: Time | None = None


class EventBase(Model):
    event_id: EventId
    unit_code: str = Field(max_length=60)
    dossier_code: str = Field(max_length=80)
    procedure_code: str = Field(max_length=60)
    sequence: int = Field(ge=1, le=1_000_000)
    occurred_at: Time
    applicant: Applicant
    origin: str = Field(
        "onestop", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._\-]+$",
        description="the system that produced the event (an identifier: it keys routing and ordering streams)",
    )
    unit_code_sent: str | None = Field(
        None, max_length=60,
        description="set by the relay: the closed code the sender used, which it resolved to unit_code "
                    "(its successor in the unit directory)",
    )

    @field_validator("unit_code")
    @classmethod
    def _unit(cls, v: str, info: ValidationInfo) -> str:
        return _check_code("unit_code", v, info)

    @field_validator("dossier_code")
    @classmethod
    def _dossier(cls, v: str, info: ValidationInfo) -> str:
        return _check_code("dossier_code", v, info)

    @field_validator("procedure_code")
    @classmethod
    def _procedure(cls, v: str, info: ValidationInfo) -> str:
        return _check_code("procedure_code", v, info)


# ---- dossier lifecycle ------------------------------------------------------------

class SubmittedData(Model):
    channel: Literal["online", "desk", "postal"] = "desk"
    procedure_name: str | None = Field(None, max_length=500)
    documents: list[Document] = Field(default_factory=list, max_length=200)


class ReceivedData(Model):
    receipt_no: str = Field(max_length=60)
    due_at: Time
    procedure_name: str | None = Field(None, max_length=500)
    return_by_post: bool = False


class ReasonData(Model):
    reason: ShortText


class ProcessingData(Model):
    step: ProcessingStep


class SupplementData(Model):
    reason: ShortText
    items: list[str] = Field(default_factory=list, max_length=50)
    due_at: Time | None = None


class FeeRequestData(Model):
    fee_id: str = Field(max_length=60)
    amount: Money
    lines: list[FeeLine] = Field(default_factory=list, max_length=50)


class CompletedData(Model):
    result_documents: list[Document] = Field(default_factory=list, max_length=50)
    pickup: Literal["desk", "post", "online"] = "desk"
    late: bool = False


class ReturnedData(Model):
    returned_at: Time
    method: Literal["desk", "post", "online"] = "desk"


class DossierSubmitted(EventBase):
    type: Literal["dossier.submitted"]
    data: SubmittedData = SubmittedData()


class DossierReceived(EventBase):
    type: Literal["dossier.received"]
    data: ReceivedData


class DossierRefused(EventBase):
    type: Literal["dossier.refused"]
    data: ReasonData


class DossierProcessing(EventBase):
    type: Literal["dossier.processing"]
    data: ProcessingData


class DossierSupplementRequested(EventBase):
    type: Literal["dossier.supplement_requested"]
    data: SupplementData


class DossierFeeRequested(EventBase):
    type: Literal["dossier.fee_requested"]
    data: FeeRequestData


class DossierWithdrawn(EventBase):
    type: Literal["dossier.withdrawn"]
    data: ReasonData


class DossierSuspended(EventBase):
    type: Literal["dossier.suspended"]
    data: ReasonData


class DossierCompleted(EventBase):
    type: Literal["dossier.completed"]
    data: CompletedData = CompletedData()


class DossierReturned(EventBase):
    type: Literal["dossier.returned"]
    data: ReturnedData


# ---- fees -------------------------------------------------------------------------

class FeeAssessedData(Model):
    fee_id: str = Field(max_length=60)
    amount: Money
    lines: list[FeeLine] = Field(min_length=1, max_length=50)
    due_at: Time | None = None


class FeePaidData(Model):
    fee_id: str = Field(max_length=60)
    amount: Money
    provider: str = Field(max_length=40)
    transaction_id: str = Field(max_length=100)
    paid_at: Time


class FeeBillCreatedData(Model):
    fee_id: str = Field(max_length=60)
    amount: Money
    provider: str = Field(max_length=40)
    bill_code: str = Field(max_length=60)
    payment_url: str = Field(max_length=2000)
    due_at: Time | None = None


class FeeRefundedData(Model):
    fee_id: str = Field(max_length=60)
    amount: Money
    reason: ShortText | None = None


class FeeAssessed(EventBase):
    type: Literal["fee.assessed"]
    data: FeeAssessedData


class FeePaid(EventBase):
    type: Literal["fee.paid"]
    data: FeePaidData


class FeeBillCreated(EventBase):
    """A bill the payment provider holds for an assessed fee, with the link the citizen pays by."""

    type: Literal["fee.bill_created"]
    data: FeeBillCreatedData


class FeeRefunded(EventBase):
    type: Literal["fee.refunded"]
    data: FeeRefundedData


# ---- postal -----------------------------------------------------------------------

class PostalRequestData(Model):
    address: Address
    cod_amount: Money = Decimal(0)
    note: ShortText | None = None


class PostalStatusData(Model):
    order_number: str = Field(max_length=80)
    purpose: Literal["pickup", "delivery"] | None = Field(None, description="which order: collecting or returning")
    item_code: str | None = Field(None, max_length=40, description="the post's item number on the label")
    status_code: str = Field(max_length=20)
    status: Literal["collected", "in_transit", "delivered", "failed_delivery", "returned_to_sender", "cancelled"]
    message: ShortText | None = None


class PostalPickupRequested(EventBase):
    type: Literal["postal.pickup_requested"]
    data: PostalRequestData


class PostalDeliveryRequested(EventBase):
    type: Literal["postal.delivery_requested"]
    data: PostalRequestData


class PostalStatus(EventBase):
    type: Literal["postal.status"]
    data: PostalStatusData


# ---- inter-level transfer -----------------------------------------------------------

class TransferRequestData(Model):
    """``target_unit`` is where the dossier must end up; the relay plans the hops (``previous_transfer_id`` is
    set on the second hop of a chain, which the relay itself asks for)."""

    target_unit: str = Field(max_length=60)
    reason: ShortText | None = None
    documents: list[Document] = Field(default_factory=list, max_length=200)
    previous_transfer_id: str | None = Field(None, max_length=120)


class TransferAnswerData(Model):
    """A unit's answer to one hop (``transfer_id``, from ``from_unit`` to ``target_unit``)."""

    target_unit: str = Field(max_length=60)
    reason: ShortText | None = None
    transfer_id: str | None = Field(None, max_length=120)
    from_unit: str | None = Field(None, max_length=60)


class TransferResultData(Model):
    """The decision on one hop; ``return_to`` names the previous hop it must travel back down (none: the
    result has reached the unit that first sent the dossier)."""

    target_unit: str = Field(max_length=60)
    outcome: Literal["approved", "rejected"] = "approved"
    documents: list[Document] = Field(default_factory=list, max_length=50)
    transfer_id: str | None = Field(None, max_length=120)
    from_unit: str | None = Field(None, max_length=60)
    return_to: str | None = Field(None, max_length=120)


class TransferRequested(EventBase):
    type: Literal["transfer.requested"]
    data: TransferRequestData


class TransferAccepted(EventBase):
    type: Literal["transfer.accepted"]
    data: TransferAnswerData


class TransferRefused(EventBase):
    type: Literal["transfer.refused"]
    data: TransferAnswerData


class TransferResult(EventBase):
    type: Literal["transfer.result"]
    data: TransferResultData


DossierEvent = (
    DossierSubmitted
    | DossierReceived
    | DossierRefused
    | DossierProcessing
    | DossierSupplementRequested
    | DossierFeeRequested
    | DossierWithdrawn
    | DossierSuspended
    | DossierCompleted
    | DossierReturned
)
"""The dossier lifecycle (``dossier.*``): what the portal follows."""
FeeEvent = FeeAssessed | FeeBillCreated | FeePaid | FeeRefunded
PostalRequest = PostalPickupRequested | PostalDeliveryRequested
"""The events that ask the post for an order (collect the dossier, deliver the result)."""
PostalEvent = PostalRequest | PostalStatus
TransferAnswer = TransferAccepted | TransferRefused | TransferResult
"""A unit's answer to one hop of a transfer."""
TransferEvent = TransferRequested | TransferAnswer

Event = Annotated[DossierEvent | FeeEvent | PostalEvent | TransferEvent, Field(discriminator="type")]
"""Any canonical event; the groups above are unions too, so ``isinstance(event, DossierEvent)`` narrows it."""

MAX_BATCH = 500
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_BATCH_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(
    Annotated[list[Event], Field(min_length=1, max_length=MAX_BATCH)]
)
EVENT_CLASSES: dict[str, type[EventBase]] = {
    t.model_fields["type"].annotation.__args__[0]: t  # type: ignore[union-attr]
    for t in EventBase.__subclasses__()
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_CLASSES)


E = TypeVar("E", bound=EventBase)


@overload
def parse_event(raw: Any, patterns: CodePatterns = ...) -> Event: ...
@overload
def parse_event(raw: Any, patterns: CodePatterns = ..., *, kind: type[E]) -> E: ...
def parse_event(raw: Any, patterns: CodePatterns = DEFAULT_CODE_PATTERNS, *, kind: type[E] | None = None) -> Any:
    """One event as it enters the relay: every field, and its codes against ``patterns``. With ``kind`` (an
    adapter building a known type) it is validated as that class, which it then is."""
    context = {_PATTERNS: patterns}
    return EVENT_ADAPTER.validate_python(raw, context=context) if kind is None else kind.model_validate(
        raw, context=context)


@overload
def parse_stored(payload: Mapping[str, Any]) -> Event: ...
@overload
def parse_stored(payload: Mapping[str, Any], *, kind: type[E]) -> E: ...
def parse_stored(payload: Mapping[str, Any], *, kind: type[E] | None = None) -> Any:
    """An event whose codes were checked when it came in (read back from the ledger, or built on the envelope
    of one that was): every field but the codes' shapes, which may have come in under other patterns. ``kind``
    as for :func:`parse_event`."""
    context = {_CODES_CHECKED: True}
    return EVENT_ADAPTER.validate_python(payload, context=context) if kind is None else kind.model_validate(
        payload, context=context)


def parse_stored_json(text: str | bytes) -> Event:
    """:func:`parse_stored` of the ledger's text itself, read and validated in one pass (no intermediate dict, about
    a third faster): what a claim does before every attempt."""
    return EVENT_ADAPTER.validate_json(text, context={_CODES_CHECKED: True})


# What text the document lets through: no NUL (the intake refuses it), and, where a field needs a value, more than
# the whitespace the models strip (Unicode's White_Space, which pydantic's str_strip_whitespace trims).
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"


def event_schema(patterns: CodePatterns = DEFAULT_CODE_PATTERNS,
                 ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON schema of :data:`Event` as :func:`parse_event` takes it under ``patterns``: the codes' shapes (which
    pydantic's schema cannot know: they are checked by validators, against the settings' patterns), the years of
    every time, and text without NUL that is not blank where a value is required."""
    schema = EVENT_ADAPTER.json_schema(ref_template=ref_template)
    events = {cls.__name__ for cls in EVENT_CLASSES.values()}
    for name, model in schema.get("$defs", {}).items():
        for kind in ("unit_code", "dossier_code", "procedure_code") if name in events else ():
            pattern = getattr(patterns, kind).pattern
            model["properties"][kind]["pattern"] = pattern if pattern.startswith("^") else f"^(?:{pattern})"
    _text_rules(schema)
    return schema


def _text_rules(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _text_rules(item)
    elif isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & node.keys():
            node["pattern"] = NOT_BLANK if node.get("minLength", 0) >= 1 else NO_NUL
        for value in node.values():
            _text_rules(value)


def event_json(event: BaseModel) -> dict[str, Any]:
    """The canonical JSON form of an event (what the ledger stores and subscribers receive)."""
    return event.model_dump(mode="json", exclude_none=True)


def canonical_json(payload: Mapping[str, Any]) -> str:
    """The text an event is stored as (sorted keys, no spaces, UTF-8 as it is): its hash tells a duplicate from a
    conflict, and a webhook subscriber receives exactly these bytes."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
