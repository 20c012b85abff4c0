"""The provincial LGSP's inter-level exchange ("liên thông"): dossiers sent between units' one-stop systems.

A dossier received at a commune may need a provincial department's or the province's decision (since the
districts were abolished on 1 July 2025, two levels: docs/domain.md). The LGSP carries
it: the origin sends the dossier and its documents to the target unit, the target acknowledges (accepted, or
refused with a reason), processes, and sends the result back. No province publishes its exchange's contract, so
the simulator in ``sandbox/lgsp.py`` serves the one this module defines and documents (:data:`WSDL`); a
province's real contract changes this module, the connector and the simulator, nothing else.

**SOAP 1.1**, document/literal wrapped, namespace :data:`NAMESPACE`, endpoint :data:`ENDPOINT_PATH`
(WSDL at ``?wsdl``), a WS-Security ``UsernameToken`` (``PasswordText``) on every request:

- ``SendDossier(transferId, fromUnit, toUnit, finalUnit, dossierCode, procedureCode, reason?,
  previousTransferId?, documents)`` → ``resultCode`` ``00`` sent, ``01`` this transfer exists with the
  same content (a repeat is harmless). ``finalUnit`` is where the chain ends: a hop to an intermediate
  unit (``toUnit`` ≠ ``finalUnit``) is accepted and passed on, not decided. Every document must have
  been uploaded first (below), with its SHA-256; one missing or whose content does not match is the
  fault ``DOCUMENT_INVALID``.
- ``GetTransfer(transferId)`` → the transfer's ``status`` (:data:`STATUSES`), ``reason``, ``outcome``; ``04``
  when the exchange has none by that id.
- ``ListUpdates(afterId, maxItems)`` → what the units answered, in order (``Update``: its ``id``, the
  transfer, ``status`` ``ACCEPTED`` / ``REFUSED`` / ``RESULT``, reason, outcome, result documents, when),
  ``lastId`` and ``hasMore``: the relay reads it from a cursor.
- ``ReturnResult(transferId, outcome, documents)`` → ``00`` recorded, ``01`` already recorded: the result
  of a later hop carried back down this one, on behalf of the intermediate unit.

Faults (``detail/ExchangeFault(code, message)``, HTTP 500)::

    side    code                meaning                                           transient
    Client  AUTH_FAILED         UsernameToken missing or refused                  no
    Client  INVALID_REQUEST     not well-formed, an element missing or wrong      no
    Client  UNIT_UNKNOWN        a unit code the exchange does not serve           no
    Client  TRANSFER_CONFLICT   transferId used with other content                no
    Client  DOCUMENT_INVALID    a document not uploaded, or its SHA-256 differs   no
    Server  UNIT_UNAVAILABLE    the target unit's system is down                 yes
    Server  SYSTEM_BUSY         the exchange is busy                              yes

**Documents** go by HTTP beside SOAP (scans are hundreds of MB; base64 in an envelope would be held
whole in memory on both sides): ``PUT {base}/documents/{transferId}/{index}`` streamed (chunked), with
``X-Content-SHA256`` (hex) and HTTP Basic with the same username and password. The exchange hashes what
it stores and answers ``201`` when it matches, ``422`` (``{"code": "DOCUMENT_INVALID"}``) when not, keeping
nothing. ``HEAD`` the same URL answers ``200`` with ``X-Content-SHA256`` once stored, so a repeated
transfer uploads nothing twice.

**The LGSP's gateway.** A province's LGSP puts an API manager in front of its services, and what it asks is
known from OpenCPS's ``LGSPRestClient`` (``getToken``, the header of its later calls): an OAuth2 client-credentials
token at ``{base}``:data:`TOKEN_PATH` — a form (``application/x-www-form-urlencoded``) ``grant_type=
client_credentials&client_id=<consumer key>&client_secret=<consumer secret>``, answered ``{access_token,
token_type, expires_in, scope}`` (:class:`GatewayToken`) — and ``Authorization: Bearer <access_token>`` on every
call behind it. A call without a live token is refused ``401`` by the gateway, before the exchange sees it
(``{"fault": {"code": 900901, "message": "Invalid Credentials"}}``, an API manager's words); a refused token
request is an OAuth2 error (:class:`TokenRefusal`: ``400 invalid_request`` / ``unsupported_grant_type``,
``401 invalid_client``). One request has one ``Authorization`` header: behind the gateway a document call carries
the token in place of the account's Basic, and the gateway authenticates to the exchange with the account it
holds for the consumer key (an API manager's endpoint security). The envelope's UsernameToken is the exchange's
own and stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.wire import OAuthError, Wire

NAMESPACE = "urn:motcua:lgsp:lienthong:v1"
SERVICE_NAME = "InterLevelExchange"
ENDPOINT_PATH = "/soap/lienthong"
DOCUMENTS_PATH = "/documents"
SHA256_HEADER = "X-Content-SHA256"

SEND_DOSSIER, GET_TRANSFER, LIST_UPDATES, RETURN_RESULT = "SendDossier", "GetTransfer", "ListUpdates", "ReturnResult"
OPERATIONS = (SEND_DOSSIER, GET_TRANSFER, LIST_UPDATES, RETURN_RESULT)

SUCCESS, EXISTS, NOT_FOUND = "00", "01", "04"
RESULT_CODES = {SUCCESS: "Thành công", EXISTS: "Đã tồn tại", NOT_FOUND: "Không tìm thấy"}
AUTH_FAILED, INVALID_REQUEST, UNIT_UNKNOWN = "AUTH_FAILED", "INVALID_REQUEST", "UNIT_UNKNOWN"
TRANSFER_CONFLICT, DOCUMENT_INVALID = "TRANSFER_CONFLICT", "DOCUMENT_INVALID"
UNIT_UNAVAILABLE, SYSTEM_BUSY = "UNIT_UNAVAILABLE", "SYSTEM_BUSY"
SERVER_FAULTS = frozenset({UNIT_UNAVAILABLE, SYSTEM_BUSY})

SENT, ACCEPTED, REFUSED, RESULT = "SENT", "ACCEPTED", "REFUSED", "RESULT"
STATUSES = (SENT, ACCEPTED, REFUSED, RESULT)
Status = Literal["SENT", "ACCEPTED", "REFUSED", "RESULT"]
Outcome = Literal["approved", "rejected"]
UPDATE_STATUSES = (ACCEPTED, REFUSED, RESULT)

TOKEN_PATH = "/token"  # noqa: S105 (a path)
TOKEN_SECONDS = 3600  # a token's lifetime when the gateway's answer gives none (an API manager's default)


class DocumentRef(Wire):
    """A document of a transfer: uploaded beside the envelope under its index."""

    name: str = Field(min_length=1, max_length=300)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TransferRequest(Wire):
    """What ``SendDossier`` carries (no personal data: the target's system has the dossier's own)."""

    transferId: str = Field(min_length=1, max_length=120)
    fromUnit: str = Field(min_length=1, max_length=60)
    toUnit: str = Field(min_length=1, max_length=60)
    finalUnit: str = Field(min_length=1, max_length=60)
    dossierCode: str = Field(min_length=1, max_length=80)
    procedureCode: str = Field(min_length=1, max_length=60)
    reason: str | None = Field(None, max_length=1000)
    previousTransferId: str | None = Field(None, max_length=120)
    documents: list[DocumentRef] = Field(default_factory=list, max_length=200)


class TransferState(Wire):
    transferId: str
    status: Status
    fromUnit: str
    toUnit: str
    reason: str | None = None
    outcome: Outcome | None = None


class Update(Wire):
    """One answer of a unit, as ``ListUpdates`` gives it."""

    id: int
    transferId: str
    status: Literal["ACCEPTED", "REFUSED", "RESULT"]
    fromUnit: str
    toUnit: str
    dossierCode: str
    reason: str | None = None
    outcome: Outcome | None = None
    at: datetime
    documents: list[DocumentRef] = Field(default_factory=list)


class UpdatePage(Wire):
    updates: list[Update]
    lastId: int
    hasMore: bool


class GatewayToken(Wire):
    """The gateway's token answer, the fields ``LGSPRestClient`` reads into its ``Mtoken``."""

    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"  # noqa: S105 (a kind of token)
    expires_in: int = Field(TOKEN_SECONDS, ge=0)
    scope: str | None = None


TokenRefusal = OAuthError  # an OAuth2 error answer of the token endpoint (RFC 6749 §5.2)


def transfer_id(dossier_code: str, from_unit: str, to_unit: str) -> str:
    """One hop's id: a dossier goes from one unit to another once (the idempotency key)."""
    return f"{dossier_code}:{from_unit}:{to_unit}"


# ---- the WSDL --------------------------------------------------------------------------

_STRING, _INT, _LONG, _BOOL, _TIME = "xsd:string", "xsd:int", "xsd:long", "xsd:boolean", "xsd:dateTime"
_DOCUMENT = [("name", _STRING, ""), ("sha256", _STRING, ""), ("size", _LONG, "")]
_UPDATE = [("id", _LONG, ""), ("transferId", _STRING, ""), ("status", "tns:Status", ""), ("fromUnit", _STRING, ""),
           ("toUnit", _STRING, ""), ("dossierCode", _STRING, ""), ("reason", _STRING, "?"),
           ("outcome", "tns:Outcome", "?"), ("at", _TIME, ""), ("documents", "tns:ArrayOfDocument", "?")]
_RESULT = [("resultCode", _STRING, ""), ("resultMessage", _STRING, "")]
_MESSAGES: dict[str, tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]] = {
    SEND_DOSSIER: ([("transferId", _STRING, ""), ("fromUnit", _STRING, ""), ("toUnit", _STRING, ""),
                    ("finalUnit", _STRING, ""), ("dossierCode", _STRING, ""), ("procedureCode", _STRING, ""),
                    ("reason", _STRING, "?"), ("previousTransferId", _STRING, "?"),
                    ("documents", "tns:ArrayOfDocument", "")],
                   [*_RESULT, ("transferId", _STRING, ""), ("status", "tns:Status", "")]),
    GET_TRANSFER: ([("transferId", _STRING, "")],
                   [*_RESULT, ("transferId", _STRING, "?"), ("status", "tns:Status", "?"), ("fromUnit", _STRING, "?"),
                    ("toUnit", _STRING, "?"), ("reason", _STRING, "?"), ("outcome", "tns:Outcome", "?")]),
    LIST_UPDATES: ([("afterId", _LONG, ""), ("maxItems", _INT, "")],
                   [*_RESULT, ("lastId", _LONG, ""), ("hasMore", _BOOL, ""), ("updates", "tns:ArrayOfUpdate", "")]),
    RETURN_RESULT: ([("transferId", _STRING, ""), ("outcome", "tns:Outcome", ""),
                     ("documents", "tns:ArrayOfDocument", "")],
                    [*_RESULT, ("transferId", _STRING, "")]),
}


_OCCURS = {"": "", "?": ' minOccurs="0"', "*": ' minOccurs="0" maxOccurs="unbounded"'}


def _sequence(fields: list[tuple[str, str, str]], indent: str) -> str:
    """``fields``: (name, type, occurrence): "" once, "?" optional, "*" any number."""
    lines = [f'{indent}<xsd:element name="{name}" type="{kind}"{_OCCURS[opt]}/>' for name, kind, opt in fields]
    return f"{indent[:-2]}<xsd:sequence>\n" + "\n".join(lines) + f"\n{indent[:-2]}</xsd:sequence>"


def _complex(name: str, fields: list[tuple[str, str, str]]) -> str:
    return f'      <xsd:complexType name="{name}">\n{_sequence(fields, "          ")}\n      </xsd:complexType>'


def _wrapper(name: str, inner: str) -> str:
    return (f'      <xsd:element name="{name}">\n        <xsd:complexType>\n{inner}\n'
            f"        </xsd:complexType>\n      </xsd:element>")


def _enum(name: str, values: tuple[str, ...]) -> str:
    items = "".join(f'<xsd:enumeration value="{v}"/>' for v in values)
    return (f'      <xsd:simpleType name="{name}"><xsd:restriction base="xsd:string">{items}</xsd:restriction>'
            "</xsd:simpleType>")


def _wsdl() -> str:
    types = [_enum("Status", STATUSES), _enum("Outcome", ("approved", "rejected")),
             _complex("Document", _DOCUMENT),
             _complex("ArrayOfDocument", [("Document", "tns:Document", "*")]),
             _complex("Update", _UPDATE), _complex("ArrayOfUpdate", [("Update", "tns:Update", "*")])]
    messages, operations, bindings = [], [], []
    for op, (request, result) in _MESSAGES.items():
        types.append(_complex(f"{op}Result", result))
        types.append(_wrapper(op, _sequence(request, "            ")))
        types.append(_wrapper(f"{op}Response", _sequence([(f"{op}Result", f"tns:{op}Result", "")], "            ")))
        messages.append(f'  <wsdl:message name="{op}Request"><wsdl:part name="parameters" element="tns:{op}"/>'
                        f'</wsdl:message>\n  <wsdl:message name="{op}Response"><wsdl:part name="parameters" '
                        f'element="tns:{op}Response"/></wsdl:message>')
        operations.append(f'    <wsdl:operation name="{op}"><wsdl:input message="tns:{op}Request"/>'
                          f'<wsdl:output message="tns:{op}Response"/><wsdl:fault name="ExchangeFault" '
                          f'message="tns:ExchangeFault"/></wsdl:operation>')
        bindings.append(f'    <wsdl:operation name="{op}"><soap:operation soapAction="{NAMESPACE}#{op}"/>'
                        f'<wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/>'
                        f'</wsdl:output><wsdl:fault name="ExchangeFault"><soap:fault name="ExchangeFault" '
                        f'use="literal"/></wsdl:fault></wsdl:operation>')
    types.append(_wrapper("ExchangeFault", _sequence([("code", _STRING, ""), ("message", _STRING, "")],
                                                     "            ")))
    schema = "\n".join(types)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="{SERVICE_NAME}" targetNamespace="{NAMESPACE}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{NAMESPACE}">
  <wsdl:documentation>Trục liên thông LGSP: chuyển hồ sơ giữa hệ thống một cửa các cấp. Mỗi yêu cầu mang
    WS-Security UsernameToken (PasswordText).</wsdl:documentation>
  <wsdl:types>
    <xsd:schema targetNamespace="{NAMESPACE}" elementFormDefault="qualified">
{schema}
    </xsd:schema>
  </wsdl:types>
{chr(10).join(messages)}
  <wsdl:message name="ExchangeFault"><wsdl:part name="fault" element="tns:ExchangeFault"/></wsdl:message>
  <wsdl:portType name="{SERVICE_NAME}PortType">
{chr(10).join(operations)}
  </wsdl:portType>
  <wsdl:binding name="{SERVICE_NAME}Binding" type="tns:{SERVICE_NAME}PortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
{chr(10).join(bindings)}
  </wsdl:binding>
  <wsdl:service name="{SERVICE_NAME}">
    <wsdl:port name="{SERVICE_NAME}Port" binding="tns:{SERVICE_NAME}Binding">
      <soap:address location="http://127.0.0.1{ENDPOINT_PATH}"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""


WSDL = _wsdl()
