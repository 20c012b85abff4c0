"""Canonical events ⇄ postal orders and statuses (pure: no I/O).

Out: ``postal.pickup_requested`` becomes a pickup order (the citizen sends the dossier to the
reception desk), ``postal.delivery_requested`` a delivery order (the desk sends the result to
the citizen, fees still due collected on delivery). The order number is the dossier code plus
the purpose's suffix (``-TN`` collected for reception, ``-KQ`` result): the key the deliverer
creates the order once by (the gateway has no look-up; ``services/postal/deliver.py``).
``dossier.withdrawn`` cancels both orders, and a ``dossier.returned`` handed over other than by
post cancels the delivery order.

In: a tracking record of one of our orders becomes a ``postal.status`` event for the one-stop
software, built on the request event that created the order (unit, procedure, applicant), with
the id ``postal:<order number>:<status code>:<yyyyMMddHHmmss>``: the same status found by the
poller and pushed by a callback is one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard, get_args

from config.admin_units import AdminUnits
from schemas.events import (
    Address,
    DossierReturned,
    DossierWithdrawn,
    Event,
    PostalRequest,
    PostalStatus,
    parse_stored,
)
from schemas.postal import (
    DEFAULT_ANSWERS,
    DEFAULT_STATUS_MAP,
    DONE,
    CanonicalStatus,
    Meaning,
    PostalOrder,
    Purpose,
    TrackingRecord,
    money,
)
from schemas.vietnam import VN_TZ

DEFAULT_SUFFIXES: dict[Purpose, str] = {"pickup": "TN", "delivery": "KQ"}
REQUEST_TYPES: dict[str, Purpose] = {"postal.pickup_requested": "pickup", "postal.delivery_requested": "delivery"}
CANONICAL_STATUSES = frozenset(s for s in DEFAULT_STATUS_MAP.values() if s)
MEANINGS = frozenset(get_args(Meaning))


class AddressError(ValueError):
    """An address the post cannot be given: the reason names the field, never the citizen's data."""


class OrderError(ValueError):
    """An event that cannot become an order (no phone, no name): permanent, shown to the operator."""


@dataclass(frozen=True)
class Agency:
    """The reception desk: the receiver of collected dossiers and the sender of results."""

    name: str
    phone: str
    address: str
    province: str
    district: str = ""
    email: str | None = None

    @classmethod
    def from_options(cls, raw: Mapping[str, Any]) -> Agency:
        missing = [k for k in ("name", "phone", "address", "province") if not raw.get(k)]
        if missing:
            raise ValueError(f"postal agency needs {', '.join(missing)}")
        return cls(name=str(raw["name"]), phone=str(raw["phone"]), address=str(raw["address"]),
                   province=str(raw["province"]), district=str(raw.get("district") or ""),
                   email=str(raw["email"]) if raw.get("email") else None)


@dataclass(frozen=True)
class PostalMapping:
    """What a postal destination configures: the customer, the desks, suffixes, status codes."""

    customer_code: str
    agency: Agency
    agencies: dict[str, Agency] = field(default_factory=dict)  # unit code → its own desk
    suffixes: dict[Purpose, str] = field(default_factory=lambda: dict(DEFAULT_SUFFIXES))
    status_map: dict[int, CanonicalStatus | None] = field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    answers: dict[int, Meaning] = field(default_factory=lambda: dict(DEFAULT_ANSWERS))
    require_district: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PostalMapping:
        customer = options.get("customer_code")
        if not customer:
            raise ValueError("postal destination needs customer_code")
        suffixes = {**DEFAULT_SUFFIXES, **(options.get("order_suffixes") or {})}
        if len(set(suffixes.values())) != len(suffixes):
            raise ValueError("postal order_suffixes must differ per purpose")
        status_map: dict[int, CanonicalStatus | None] = dict(DEFAULT_STATUS_MAP)
        for code, status in (options.get("status_map") or {}).items():
            if status and status not in CANONICAL_STATUSES:
                raise ValueError(f"postal status_map: {code} → {status!r} is not one of {sorted(CANONICAL_STATUSES)}")
            status_map[_code("status_map", code)] = status or None
        answers: dict[int, Meaning] = dict(DEFAULT_ANSWERS)
        for code, meaning in (options.get("answers") or {}).items():
            if meaning not in MEANINGS:
                raise ValueError(f"postal answers: {code} → {meaning!r} is not one of {sorted(MEANINGS)}")
            answers[_code("answers", code)] = meaning
        if answers.get(DONE) != "done":
            raise ValueError(f"postal answers: Status {DONE} is the gateway's success and cannot be remapped")
        return cls(
            customer_code=str(customer),
            agency=Agency.from_options(options.get("agency") or {}),
            agencies={str(unit): Agency.from_options(a) for unit, a in (options.get("agencies") or {}).items()},
            suffixes=suffixes,
            status_map=status_map,
            answers=answers,
            require_district=bool(options.get("require_district", False)),
        )

    def desk(self, unit_code: str) -> Agency:
        return self.agencies.get(unit_code, self.agency)


def _code(option: str, code: Any) -> int:
    """A status code written as a key of the routing file (``"4"``), as the integer the gateway sends."""
    text = str(code).strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"postal {option}: {code!r} is not an integer status code")
    return int(text)


# --------------------------------------------------------------------------- order numbers


def order_number(dossier_code: str, purpose: Purpose, mapping: PostalMapping) -> str:
    return f"{dossier_code}-{mapping.suffixes[purpose]}"


def parse_order_number(number: str, mapping: PostalMapping) -> tuple[str, Purpose] | None:
    """The dossier code and purpose an order number of ours was made from, or ``None``."""
    for purpose, suffix in mapping.suffixes.items():
        tail = f"-{suffix}"
        if number.endswith(tail) and len(number) > len(tail):
            return number[: -len(tail)], purpose
    return None


# --------------------------------------------------------------------------- out: orders


CANCELLING_TYPES = frozenset({"dossier.withdrawn", "dossier.returned"})


def takes(event: Event) -> TypeGuard[PostalRequest | DossierWithdrawn | DossierReturned]:
    """Events a postal destination acts on: requests, and what may cancel them."""
    return isinstance(event, PostalRequest | DossierWithdrawn | DossierReturned)


def cancellations(event: Event) -> list[Purpose]:
    """The orders an event cancels: both on withdrawal, the delivery when handed over otherwise."""
    if isinstance(event, DossierWithdrawn):
        return ["pickup", "delivery"]
    if isinstance(event, DossierReturned) and event.data.method != "post":
        return ["delivery"]
    return []


def resolve(address: Address | None, units: AdminUnits, require_district: bool,
            who: str) -> tuple[str, int, int | None]:
    """``(address line, province code, district code or None)`` of an address, or :class:`AddressError`.

    Since 1 July 2025 an address is province and commune: the commune (``ward``) goes in the address line, which
    is where MOrder has room for it; a district, if the address still names one, is sent as its code."""
    address = address or Address()
    province_name = (address.province or "").strip()
    if not province_name:
        raise AddressError(f"{who}'s address names no province")
    province = units.province(province_name)
    if province is None:
        raise AddressError(f"{who}'s province {province_name!r} is not in the administrative-unit table "
                           f"({units.source})")
    district_name = (address.district or "").strip()
    district = ""
    if district_name:
        found = units.district(province, district_name)
        if found is None and require_district:
            raise AddressError(f"{who}'s district {district_name!r} is not a district of "
                               f"{units.names[province]} in the administrative-unit table ({units.source})")
        district = found or ""
    elif require_district:
        raise AddressError(f"{who}'s address names no district, and this contract requires one")
    line = ", ".join(part for part in (address.street, address.ward, address.district, address.province) if part)
    return line, int(province), int(district) if district else None


def _given(address: Address | None) -> Address | None:
    """The address if it holds any part (a request may carry an empty one: the applicant's then counts)."""
    if address is None or all(getattr(address, name) is None for name in Address.model_fields):
        return None
    return address


def order_for(event: PostalRequest, mapping: PostalMapping, units: AdminUnits) -> PostalOrder:
    """The order a ``postal.*_requested`` event asks for (V3–V5): on a pickup the citizen is the sender and the
    desk the receiver, on a delivery the other way round."""
    purpose = REQUEST_TYPES[event.type]
    applicant, data = event.applicant, event.data
    if not applicant.phone:
        raise OrderError("the applicant has no phone number: the postman could not reach them")
    citizen_line, citizen_province, citizen_district = resolve(
        _given(data.address) or applicant.address, units, mapping.require_district, "the citizen")
    desk = mapping.desk(event.unit_code)
    _, desk_province, desk_district = resolve(Address(province=desk.province, district=desk.district or None),
                                              units, mapping.require_district, "the reception desk")
    citizen = {"Name": applicant.name, "Address": citizen_line, "Province": citizen_province,
               "District": citizen_district, "Tel": applicant.phone, "Email": applicant.email}
    agency = {"Name": desk.name, "Address": desk.address, "Province": desk_province,
              "District": desk_district, "Tel": desk.phone, "Email": desk.email}
    sender, receiver = (citizen, agency) if purpose == "pickup" else (agency, citizen)
    what = "Thu gom hồ sơ" if purpose == "pickup" else "Chuyển phát kết quả giải quyết TTHC"
    note = (data.note or "").strip()
    return PostalOrder(
        CustomerCode=mapping.customer_code,
        OrderNumber=order_number(event.dossier_code, purpose, mapping),
        CODAmount=money(data.cod_amount) if purpose == "delivery" else 0.0,
        **{f"Sender{k}": v for k, v in sender.items()},
        SenderDesc=note[:500] or None,
        Description=f"{what} {event.dossier_code}",
        **{f"Receiver{k}": v for k, v in receiver.items()},
    )


# --------------------------------------------------------------------------- in: statuses


def status_event_id(record: TrackingRecord) -> str:
    at = record.at.astimezone(VN_TZ).strftime("%Y%m%d%H%M%S")
    return f"postal:{record.OrderNumber}:{record.StatusCode}:{at}"


def status_event(record: TrackingRecord, request: PostalRequest, mapping: PostalMapping,
                 origin: str) -> PostalStatus | None:
    """The ``postal.status`` event of one tracking record (``None`` for a status the one-stop
    software need not hear of, like "waiting for the postman"), built on the order's request
    event. Its origin is ``<destination>.<purpose>`` (``postal.delivery``): each order is its own
    stream, so the pickup's statuses never make the delivery's look late. Its ``sequence`` is a
    placeholder: the ledger numbers inbound statuses in their stream. Its codes are the stored request's,
    checked when it came in, so they are not checked again."""
    if record.StatusCode not in mapping.status_map:
        raise ValueError(f"postal status code {record.StatusCode!r} is not in the status_map")
    status = mapping.status_map[record.StatusCode]
    if status is None:
        return None
    purpose = REQUEST_TYPES[request.type]
    raw = {
        "event_id": status_event_id(record),
        "type": "postal.status",
        "origin": f"{origin}.{purpose}",
        "unit_code": request.unit_code,
        "dossier_code": request.dossier_code,
        "procedure_code": request.procedure_code,
        "sequence": 1,
        "occurred_at": record.at.astimezone(VN_TZ).isoformat(),
        "applicant": request.applicant,  # validated already: taken as it is
        "data": {
            "order_number": record.OrderNumber,
            "purpose": purpose,
            "item_code": record.ItemCode or None,
            "status_code": str(record.StatusCode),
            "status": status,
            "message": (record.StatusMessage or "")[:500] or None,
        },
    }
    return parse_stored(raw, kind=PostalStatus)
