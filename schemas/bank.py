"""The bank's bill-collection web service ("Dịch vụ thu hộ ngân sách / thu phí, lệ phí").

Banks that collect fees for the public sector offer a SOAP web service with a WSDL (docs/domain.md,
"Fee collection"): the one-stop software creates a bill, the citizen pays it at the counter, by
internet or mobile banking or by QR, and the bank lists each day's settled transactions for the
reconciliation ("đối soát"). No bank publishes its contract, so the simulator in ``sandbox/bank.py``
serves the one this module defines and documents (:data:`WSDL`); a province's real contract changes
this module, the connector and the simulator, nothing else.

SOAP 1.1, document/literal wrapped, target namespace :data:`NAMESPACE`, one endpoint
(:data:`ENDPOINT_PATH`) whose WSDL is at ``GET <endpoint>?wsdl``. Every request carries a WS-Security
``UsernameToken`` with the partner's username and its password as ``PasswordText`` (TLS protects it).

- ``CreateBill(partnerCode, billCode, amount, payerName, description, dossierCode, unitCode, dueDate?)``
  → ``CreateBillResult(resultCode, resultMessage, billCode, bankReference, paymentUrl)``: ``00`` created;
  ``01`` the bill code exists with the same amount, the answer is the first one's (same ``bankReference``),
  so a repeated call is harmless; the same code with another amount is the fault ``BILL_CONFLICT``.
  ``amount`` is ``xsd:long`` đồng; only the amount decides whether a repeat is the same bill.
- ``QueryTransaction(partnerCode, billCode)`` → ``QueryTransactionResult(resultCode, resultMessage,
  billCode, status?, amount?, paidAmount?, transactionId?, paidAt?, channel?)``: ``00`` with the bill's
  :data:`BillStatus` (the payment's fields once ``PAID``), ``04`` no such bill (an answer, not a fault).
- ``ListSettledTransactions(partnerCode, settlementDate)`` → ``ListSettledTransactionsResult(resultCode,
  resultMessage, settlementDate, transactions)``: every transaction settled that day, that is paid on that
  date in Vietnam time, as a sequence of ``Transaction(transactionId, billCode, amount, paidAt, channel,
  settlementDate)``. It may hold what the bill list does not: a payment for a bill the bank never issued
  for this partner, a bill paid twice, an amount other than the bill's.

``paidAt`` is an ``xsd:dateTime`` with its offset (``+07:00``); one without is read as Vietnam time.
``channel`` is one of :data:`CHANNELS` or another the bank adds.

Faults: ``soap:Fault`` with ``faultcode`` ``soap:Client`` or ``soap:Server``, ``faultstring`` in
Vietnamese and ``detail/BillCollectionFault(code, message)`` (HTTP 500, as SOAP 1.1 says)::

    side    code               meaning                                           transient
    Client  AUTH_FAILED        UsernameToken missing, not PasswordText, refused  no
    Client  PARTNER_UNKNOWN    partnerCode not this user's                       no
    Client  INVALID_REQUEST    not well-formed, a DTD, an unknown operation, an  no
                               element missing or wrong (named, never its value)
    Client  BILL_CONFLICT      billCode exists with another amount               no
    Server  SYSTEM_BUSY        the bank is busy, try again later                 yes
    Server  SYSTEM_ERROR       the bank failed; the bill's state is unknown      yes (look up first)
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from schemas.privacy import PersonalStr
from schemas.vietnam import VN_TZ
from schemas.wire import Wire

NAMESPACE = "urn:motcua:bank:billcollection:v1"
SERVICE_NAME = "BillCollectionService"
ENDPOINT_PATH = "/soap/billcollection"
SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
USERNAME_PROFILE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = USERNAME_PROFILE_NS + "#PasswordText"

CREATE_BILL = "CreateBill"
QUERY_TRANSACTION = "QueryTransaction"
LIST_SETTLED = "ListSettledTransactions"
OPERATIONS = (CREATE_BILL, QUERY_TRANSACTION, LIST_SETTLED)

# resultCode of an answer that is not a fault.
SUCCESS = "00"
BILL_EXISTS = "01"
BILL_NOT_FOUND = "04"
RESULT_CODES: dict[str, str] = {
    SUCCESS: "thành công",
    BILL_EXISTS: "hóa đơn đã tồn tại",
    BILL_NOT_FOUND: "không tìm thấy hóa đơn",
}

# detail/BillCollectionFault/code of a fault, and the faultcode it comes with.
AUTH_FAILED = "AUTH_FAILED"
PARTNER_UNKNOWN = "PARTNER_UNKNOWN"
INVALID_REQUEST = "INVALID_REQUEST"
BILL_CONFLICT = "BILL_CONFLICT"
SYSTEM_BUSY = "SYSTEM_BUSY"
SYSTEM_ERROR = "SYSTEM_ERROR"
FAULT_CODES: dict[str, str] = {
    AUTH_FAILED: "xác thực không thành công",
    PARTNER_UNKNOWN: "mã đối tác không hợp lệ",
    INVALID_REQUEST: "yêu cầu không hợp lệ",
    BILL_CONFLICT: "mã hóa đơn đã tồn tại với số tiền khác",
    SYSTEM_BUSY: "hệ thống bận, vui lòng thử lại sau",
    SYSTEM_ERROR: "lỗi hệ thống",
}
SERVER_FAULTS = frozenset({SYSTEM_BUSY, SYSTEM_ERROR})
TRANSIENT_FAULTS = frozenset({SYSTEM_BUSY, SYSTEM_ERROR})  # the bank's own weather, as the post's and portal's "99"

UNPAID = "UNPAID"
PAID = "PAID"
CANCELLED = "CANCELLED"
BillStatus = Literal["UNPAID", "PAID", "CANCELLED"]
CHANNELS = ("COUNTER", "INTERNET_BANKING", "MOBILE_BANKING", "QR", "ATM")

BillCode = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9._\-]+$")]
PartnerCode = Annotated[str, Field(min_length=1, max_length=20)]
Money = Annotated[int, Field(ge=0, le=999_999_999_999, description="đồng (xsd:long)")]


class BillRequest(Wire):
    """What ``CreateBill`` says besides the partner code (the connector adds that)."""

    billCode: BillCode
    amount: Money = Field(gt=0)
    payerName: PersonalStr = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=500)
    dossierCode: str = Field(min_length=1, max_length=60)
    unitCode: str = Field(min_length=1, max_length=20, description="the collecting agency's budget unit code")
    dueDate: date | None = None


def _vietnam_time(value: Any) -> Any:
    """A ``paidAt`` without an offset is Vietnam time (many banks send it so)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=VN_TZ)
    return value


class BillCreated(Wire):
    """A bill the bank holds: ``created`` is False when an earlier call had created it (``01``)."""

    billCode: str
    bankReference: str = Field(min_length=1)
    paymentUrl: str = ""
    created: bool


class TransactionStatus(Wire):
    """A bill as ``QueryTransaction`` shows it; the payment's fields are set once it is ``PAID``."""

    billCode: str
    status: BillStatus
    amount: Money | None = None
    paidAmount: Money | None = None
    transactionId: str | None = None
    paidAt: datetime | None = None
    channel: str | None = None

    _paid_at = field_validator("paidAt", mode="before")(_vietnam_time)


class SettledTransaction(Wire):
    """One line of a day's settlement list."""

    transactionId: str = Field(min_length=1)
    billCode: str
    amount: Money
    paidAt: datetime
    channel: str = ""
    settlementDate: date

    _paid_at = field_validator("paidAt", mode="before")(_vietnam_time)


WSDL = """<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="BillCollectionService" targetNamespace="urn:motcua:bank:billcollection:v1"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:motcua:bank:billcollection:v1">
  <wsdl:documentation>Dịch vụ thu hộ ngân sách, thu phí, lệ phí. Mỗi yêu cầu mang WS-Security UsernameToken
    (PasswordText) của đối tác.</wsdl:documentation>
  <wsdl:types>
    <xsd:schema targetNamespace="urn:motcua:bank:billcollection:v1" elementFormDefault="qualified">
      <xsd:simpleType name="Code">
        <xsd:restriction base="xsd:string"><xsd:maxLength value="60"/></xsd:restriction>
      </xsd:simpleType>
      <xsd:simpleType name="BillStatus">
        <xsd:restriction base="xsd:string">
          <xsd:enumeration value="UNPAID"/><xsd:enumeration value="PAID"/><xsd:enumeration value="CANCELLED"/>
        </xsd:restriction>
      </xsd:simpleType>
      <xsd:complexType name="Transaction">
        <xsd:sequence>
          <xsd:element name="transactionId" type="tns:Code"/>
          <xsd:element name="billCode" type="tns:Code"/>
          <xsd:element name="amount" type="xsd:long"/>
          <xsd:element name="paidAt" type="xsd:dateTime"/>
          <xsd:element name="channel" type="xsd:string"/>
          <xsd:element name="settlementDate" type="xsd:date"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:complexType name="ArrayOfTransaction">
        <xsd:sequence>
          <xsd:element name="Transaction" type="tns:Transaction" minOccurs="0" maxOccurs="unbounded"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:complexType name="CreateBillResult">
        <xsd:sequence>
          <xsd:element name="resultCode" type="tns:Code"/>
          <xsd:element name="resultMessage" type="xsd:string"/>
          <xsd:element name="billCode" type="tns:Code"/>
          <xsd:element name="bankReference" type="tns:Code"/>
          <xsd:element name="paymentUrl" type="xsd:anyURI"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:complexType name="QueryTransactionResult">
        <xsd:sequence>
          <xsd:element name="resultCode" type="tns:Code"/>
          <xsd:element name="resultMessage" type="xsd:string"/>
          <xsd:element name="billCode" type="tns:Code"/>
          <xsd:element name="status" type="tns:BillStatus" minOccurs="0"/>
          <xsd:element name="amount" type="xsd:long" minOccurs="0"/>
          <xsd:element name="paidAmount" type="xsd:long" minOccurs="0"/>
          <xsd:element name="transactionId" type="tns:Code" minOccurs="0"/>
          <xsd:element name="paidAt" type="xsd:dateTime" minOccurs="0"/>
          <xsd:element name="channel" type="xsd:string" minOccurs="0"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:complexType name="ListSettledTransactionsResult">
        <xsd:sequence>
          <xsd:element name="resultCode" type="tns:Code"/>
          <xsd:element name="resultMessage" type="xsd:string"/>
          <xsd:element name="settlementDate" type="xsd:date"/>
          <xsd:element name="transactions" type="tns:ArrayOfTransaction"/>
        </xsd:sequence>
      </xsd:complexType>
      <xsd:element name="CreateBill">
        <xsd:complexType>
          <xsd:sequence>
            <xsd:element name="partnerCode" type="tns:Code"/>
            <xsd:element name="billCode" type="tns:Code"/>
            <xsd:element name="amount" type="xsd:long"/>
            <xsd:element name="payerName" type="xsd:string"/>
            <xsd:element name="description" type="xsd:string"/>
            <xsd:element name="dossierCode" type="tns:Code"/>
            <xsd:element name="unitCode" type="tns:Code"/>
            <xsd:element name="dueDate" type="xsd:date" minOccurs="0"/>
          </xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="CreateBillResponse">
        <xsd:complexType>
          <xsd:sequence><xsd:element name="CreateBillResult" type="tns:CreateBillResult"/></xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="QueryTransaction">
        <xsd:complexType>
          <xsd:sequence>
            <xsd:element name="partnerCode" type="tns:Code"/>
            <xsd:element name="billCode" type="tns:Code"/>
          </xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="QueryTransactionResponse">
        <xsd:complexType>
          <xsd:sequence><xsd:element name="QueryTransactionResult" type="tns:QueryTransactionResult"/></xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="ListSettledTransactions">
        <xsd:complexType>
          <xsd:sequence>
            <xsd:element name="partnerCode" type="tns:Code"/>
            <xsd:element name="settlementDate" type="xsd:date"/>
          </xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="ListSettledTransactionsResponse">
        <xsd:complexType>
          <xsd:sequence>
            <xsd:element name="ListSettledTransactionsResult" type="tns:ListSettledTransactionsResult"/>
          </xsd:sequence>
        </xsd:complexType>
      </xsd:element>
      <xsd:element name="BillCollectionFault">
        <xsd:complexType>
          <xsd:sequence>
            <xsd:element name="code" type="tns:Code"/>
            <xsd:element name="message" type="xsd:string"/>
          </xsd:sequence>
        </xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </wsdl:types>
  <wsdl:message name="CreateBillRequest">
    <wsdl:part name="parameters" element="tns:CreateBill"/>
  </wsdl:message>
  <wsdl:message name="CreateBillResponse">
    <wsdl:part name="parameters" element="tns:CreateBillResponse"/>
  </wsdl:message>
  <wsdl:message name="QueryTransactionRequest">
    <wsdl:part name="parameters" element="tns:QueryTransaction"/>
  </wsdl:message>
  <wsdl:message name="QueryTransactionResponse">
    <wsdl:part name="parameters" element="tns:QueryTransactionResponse"/>
  </wsdl:message>
  <wsdl:message name="ListSettledTransactionsRequest">
    <wsdl:part name="parameters" element="tns:ListSettledTransactions"/>
  </wsdl:message>
  <wsdl:message name="ListSettledTransactionsResponse">
    <wsdl:part name="parameters" element="tns:ListSettledTransactionsResponse"/>
  </wsdl:message>
  <wsdl:message name="BillCollectionFault">
    <wsdl:part name="fault" element="tns:BillCollectionFault"/>
  </wsdl:message>
  <wsdl:portType name="BillCollectionPortType">
    <wsdl:operation name="CreateBill">
      <wsdl:input message="tns:CreateBillRequest"/>
      <wsdl:output message="tns:CreateBillResponse"/>
      <wsdl:fault name="BillCollectionFault" message="tns:BillCollectionFault"/>
    </wsdl:operation>
    <wsdl:operation name="QueryTransaction">
      <wsdl:input message="tns:QueryTransactionRequest"/>
      <wsdl:output message="tns:QueryTransactionResponse"/>
      <wsdl:fault name="BillCollectionFault" message="tns:BillCollectionFault"/>
    </wsdl:operation>
    <wsdl:operation name="ListSettledTransactions">
      <wsdl:input message="tns:ListSettledTransactionsRequest"/>
      <wsdl:output message="tns:ListSettledTransactionsResponse"/>
      <wsdl:fault name="BillCollectionFault" message="tns:BillCollectionFault"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="BillCollectionBinding" type="tns:BillCollectionPortType">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="CreateBill">
      <soap:operation soapAction="urn:motcua:bank:billcollection:v1/CreateBill" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
      <wsdl:fault name="BillCollectionFault"><soap:fault name="BillCollectionFault" use="literal"/></wsdl:fault>
    </wsdl:operation>
    <wsdl:operation name="QueryTransaction">
      <soap:operation soapAction="urn:motcua:bank:billcollection:v1/QueryTransaction" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
      <wsdl:fault name="BillCollectionFault"><soap:fault name="BillCollectionFault" use="literal"/></wsdl:fault>
    </wsdl:operation>
    <wsdl:operation name="ListSettledTransactions">
      <soap:operation soapAction="urn:motcua:bank:billcollection:v1/ListSettledTransactions" style="document"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input>
      <wsdl:output><soap:body use="literal"/></wsdl:output>
      <wsdl:fault name="BillCollectionFault"><soap:fault name="BillCollectionFault" use="literal"/></wsdl:fault>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="BillCollectionService">
    <wsdl:port name="BillCollectionPort" binding="tns:BillCollectionBinding">
      <soap:address location="http://localhost/soap/billcollection"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"""
"""The service description, embedded schema included; the simulator serves it with ``soap:address``
set to the URL it was asked on."""
