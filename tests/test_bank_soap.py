"""The bank's bill-collection service: the simulator served by a real uvicorn on loopback, spoken to by
the connector through zeep over HTTP (nothing mocked), raw envelopes for what zeep would never send, and
the connector's fault and exception tables row by row."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
import zeep
from lxml import etree
from pydantic import SecretStr

from connectors.bank import FAULTS, BankConnector, classify_fault, map_soap_errors
from connectors.base import DeliveryError, Permanent, Retryable, attempt_deadline
from sandbox.bank import create_app
from schemas import bank as bc
from schemas.bank import BillRequest
from schemas.vietnam import VN_TZ
from tests.servers import run_asgi

PARTNER, USER, PASSWORD = "HCC-QNI", "motcua-quangninh", "m4t-khau-ngan-hang"
PAY_BASE = "https://pay.bank.test/bill"
WSDL_PATH = bc.ENDPOINT_PATH + "?wsdl"
DAY = date(2024, 3, 15)
SOAP_NS = {"soap": bc.SOAP_ENV_NS, "bc": bc.NAMESPACE}

Connect = Callable[..., BankConnector]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_asgi(create_app(partner_code=PARTNER, username=USER, password=PASSWORD, payment_base_url=PAY_BASE,
                             seed=7)) as url:
        yield url


@pytest.fixture()
def admin(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        client.post("/_admin/reset").raise_for_status()
        yield client


@pytest.fixture()
def connect(base_url: str) -> Iterator[Connect]:
    """Connectors to the simulator (``wsdl_url`` and any setting overridable), closed after the test."""
    made: list[BankConnector] = []

    def make(**overrides: Any) -> BankConnector:
        settings: dict[str, Any] = {
            "wsdl_url": base_url + WSDL_PATH, "partner_code": PARTNER, "username": USER,
            "password": SecretStr(PASSWORD), "connect_timeout": 2.0, "read_timeout": 5.0,
        }
        made.append(BankConnector(**(settings | overrides)))
        return made[-1]

    yield make
    for connector in made:
        connector.close()


def bill(code: str = "000.21.00.H49-240315-0001-LP", amount: int = 50_000, **overrides: Any) -> BillRequest:
    fields: dict[str, Any] = {
        "billCode": code, "amount": amount, "payerName": "Nguyễn Thị Hương Giang",
        "description": "Lệ phí cấp giấy chứng nhận đăng ký hộ kinh doanh", "dossierCode": "000.21.00.H49-240315-0001",
        "unitCode": "1057842", "dueDate": DAY + timedelta(days=7),
    }
    return BillRequest(**(fields | overrides))


def envelope(operation: str, *, security: str | None = None, doctype: str = "") -> bytes:
    """A raw SOAP request, for what zeep would never send."""
    if security is None:
        security = (f'<wsse:Security><wsse:UsernameToken><wsse:Username>{USER}</wsse:Username>'
                    f'<wsse:Password Type="{bc.PASSWORD_TEXT}">{PASSWORD}</wsse:Password>'
                    '</wsse:UsernameToken></wsse:Security>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>{doctype}<soap:Envelope xmlns:soap="{bc.SOAP_ENV_NS}" '
            f'xmlns:bc="{bc.NAMESPACE}" xmlns:wsse="{bc.WSSE_NS}"><soap:Header>{security}</soap:Header>'
            f'<soap:Body>{operation}</soap:Body></soap:Envelope>').encode()


def create_xml(amount: str = "50000", bill_code: str = "HD-RAW-1") -> str:
    return (f"<bc:CreateBill><bc:partnerCode>{PARTNER}</bc:partnerCode><bc:billCode>{bill_code}</bc:billCode>"
            f"<bc:amount>{amount}</bc:amount><bc:payerName>Trần Văn Bình</bc:payerName>"
            "<bc:description>Lệ phí</bc:description><bc:dossierCode>D-1</bc:dossierCode>"
            "<bc:unitCode>1057842</bc:unitCode></bc:CreateBill>")


def fault_of(response: httpx.Response) -> tuple[str, str, str]:
    """``(faultcode, detail code, faultstring)`` of a fault answer."""
    assert response.status_code == 500 and response.headers["content-type"].startswith("text/xml")
    fault = etree.fromstring(response.content).find("soap:Body/soap:Fault", SOAP_NS)
    assert fault is not None
    code = fault.findtext("detail/bc:BillCollectionFault/bc:code", namespaces=SOAP_NS)
    return fault.findtext("faultcode") or "", code or "", fault.findtext("faultstring") or ""


def stats(admin: httpx.Client) -> dict[str, Any]:
    return admin.get("/_admin/stats").json()


# ---------------------------------------------------------------------------------------------- the WSDL


def test_the_wsdl_is_served_with_the_address_it_was_asked_on_and_zeep_loads_it(base_url: str) -> None:
    response = httpx.get(base_url + WSDL_PATH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    wsdl = etree.fromstring(response.content)
    assert wsdl.get("targetNamespace") == bc.NAMESPACE
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address is not None and address.get("location") == base_url + bc.ENDPOINT_PATH

    client = zeep.Client(base_url + WSDL_PATH)
    assert set(client.service._operations) == set(bc.OPERATIONS)
    assert client.service._binding_options["address"] == base_url + bc.ENDPOINT_PATH
    assert httpx.get(base_url + bc.ENDPOINT_PATH).status_code == 404


def test_the_wsdl_is_not_subject_to_faults(admin: httpx.Client) -> None:
    admin.post("/_admin/faults", json={"error_rate": 1, "error_status": 503})
    assert admin.get(WSDL_PATH).status_code == 200
    assert stats(admin)["faults"]["error"] == 0


# ---------------------------------------------------------------------------------------------- the story


def test_a_bill_is_created_once_and_a_repeat_gets_the_same_reference(admin: httpx.Client, connect: Connect) -> None:
    # given
    connector = connect()
    # when
    first = connector.create_bill(bill())
    again = connector.create_bill(bill())
    # then
    assert first.created and not again.created
    assert first.bankReference == again.bankReference and first.bankReference.startswith("BC")
    assert again.paymentUrl == first.paymentUrl and first.paymentUrl.startswith(PAY_BASE + "?billCode=")
    (held,) = admin.get("/_admin/bills").json()
    assert held["create_calls"] == 2 and held["status"] == bc.UNPAID and held["dueDate"] == "2024-03-22"
    assert stats(admin)["calls"][bc.CREATE_BILL] == 2 and stats(admin)["answers"] == {"00": 1, "01": 1}


def test_a_bill_code_with_another_amount_is_a_permanent_conflict(admin: httpx.Client, connect: Connect) -> None:
    connector = connect()
    connector.create_bill(bill(amount=50_000))
    with pytest.raises(Permanent) as caught:
        connector.create_bill(bill(amount=70_000))
    assert "BILL_CONFLICT" in caught.value.reason and "70000" not in caught.value.reason


def test_a_query_shows_unknown_unpaid_and_cancelled_bills(admin: httpx.Client, connect: Connect) -> None:
    connector = connect()
    assert connector.query("HD-KHONG-CO") is None
    connector.create_bill(bill("HD-1"))
    unpaid = connector.query("HD-1")
    assert unpaid is not None and unpaid.status == bc.UNPAID and unpaid.amount == 50_000
    assert unpaid.transactionId is None and unpaid.paidAt is None
    admin.post("/_admin/cancel", json={"billCode": "HD-1"}).raise_for_status()
    cancelled = connector.query("HD-1")
    assert cancelled is not None and cancelled.status == bc.CANCELLED
    assert admin.post("/_admin/pay", json={"billCode": "HD-1"}).status_code == 409


def test_payments_show_in_the_query_and_in_the_settlement_of_their_vietnam_date(
    admin: httpx.Client, connect: Connect
) -> None:
    # given: two bills paid on different days (the second after midnight in Vietnam, still the 15th in UTC),
    # one paid short, and a transaction for a bill the bank never issued
    connector = connect()
    connector.create_bill(bill("HD-1", amount=50_000))
    connector.create_bill(bill("HD-2", amount=30_000))
    admin.post("/_admin/pay", json={"billCode": "HD-1", "amount": 45_000, "paidAt": "2024-03-15T09:30:00+07:00",
                                    "channel": "QR"}).raise_for_status()
    admin.post("/_admin/pay", json={"billCode": "HD-2", "paidAt": "2024-03-15T17:30:00Z"}).raise_for_status()
    extra = admin.post("/_admin/settle-extra", json={"billCode": "HD-LA", "amount": 20_000,
                                                     "paidAt": "2024-03-15T14:00:00"}).json()
    # when
    paid = connector.query("HD-1")
    day = connector.settled(DAY)
    next_day = connector.settled(DAY + timedelta(days=1))
    # then
    assert paid is not None and paid.status == bc.PAID and paid.amount == 50_000 and paid.paidAmount == 45_000
    assert paid.transactionId and paid.channel == "QR"
    assert paid.paidAt == datetime(2024, 3, 15, 9, 30, tzinfo=VN_TZ)
    assert [(t.billCode, t.amount) for t in day] == [("HD-1", 45_000), ("HD-LA", 20_000)]
    assert day[0].transactionId == paid.transactionId and day[1].transactionId == extra["transactionId"]
    assert all(t.settlementDate == DAY for t in day)
    assert day[1].paidAt == datetime(2024, 3, 15, 14, 0, tzinfo=VN_TZ)
    assert [t.billCode for t in next_day] == ["HD-2"]
    assert connector.settled(DAY - timedelta(days=1)) == []
    assert stats(admin)["calls"][bc.LIST_SETTLED] == 3


# ---------------------------------------------------------------------------------------------- failures


FAILURES: list[tuple[str, dict[str, Any], dict[str, Any], type[DeliveryError], str]] = [
    ("bad password", {}, {"password": SecretStr("sai-mat-khau-99")}, Permanent, "username and password"),
    ("other partner", {}, {"partner_code": "HCC-KHAC"}, Permanent, "partner code"),
    ("busy", {"busy_rate": 1}, {}, Retryable, "SYSTEM_BUSY"),
    ("HTTP 503", {"error_rate": 1, "error_status": 503}, {}, Retryable, "HTTP 503"),
    ("HTTP 400", {"error_rate": 1, "error_status": 400}, {}, Permanent, "HTTP 400 rejected"),
]


@pytest.mark.parametrize(("faults", "settings", "expected", "words"), [row[1:] for row in FAILURES],
                         ids=[row[0] for row in FAILURES])
def test_failures_are_classified(admin: httpx.Client, connect: Connect, faults: dict[str, Any],
                                 settings: dict[str, Any], expected: type[DeliveryError], words: str) -> None:
    connector = connect(**settings)
    if faults:
        admin.post("/_admin/faults", json=faults).raise_for_status()
    with pytest.raises(DeliveryError) as caught:
        connector.create_bill(bill())
    error = caught.value
    assert type(error) is expected and words in error.reason and "CreateBill" in error.reason
    for secret in ("sai-mat-khau-99", PASSWORD):
        assert secret not in error.reason and secret not in (error.excerpt or "")


def test_a_create_answered_too_late_is_retryable_and_the_bill_exists(admin: httpx.Client, connect: Connect) -> None:
    # given
    connector = connect(read_timeout=0.3)
    admin.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 1.5}).raise_for_status()
    # when
    with pytest.raises(Retryable, match="timeout"):
        connector.create_bill(bill())
    # then: it landed, and the retry learns so
    assert [b["billCode"] for b in admin.get("/_admin/bills").json()] == [bill().billCode]
    admin.delete("/_admin/faults")
    assert not connector.create_bill(bill()).created
    assert stats(admin)["faults"]["timeout"] == 1


def test_the_attempt_deadline_cuts_the_read_timeout(admin: httpx.Client, connect: Connect) -> None:
    connector = connect(read_timeout=10.0)
    connector.query("HD-1")  # the WSDL is loaded
    admin.post("/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 5}).raise_for_status()
    started = time.monotonic()
    with attempt_deadline(1.2), pytest.raises(Retryable, match="timeout"):
        connector.create_bill(bill())
    assert time.monotonic() - started < 3
    with attempt_deadline(0.5), pytest.raises(Retryable, match="ran out of time"):
        connector.query("HD-1")


def test_an_operation_refused_by_the_bank_names_the_element(admin: httpx.Client, connect: Connect) -> None:
    bad = BillRequest.model_construct(**(bill().model_dump() | {"amount": -5}))
    with pytest.raises(Permanent) as caught:
        connect().create_bill(bad)
    assert "INVALID_REQUEST" in caught.value.reason and "amount" in caught.value.reason
    assert admin.get("/_admin/bills").json() == []


def test_a_closed_port_and_a_server_gone_are_retryable(connect: Connect) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(Retryable, match="WSDL"):
        connect(wsdl_url=closed + WSDL_PATH).query("HD-1")

    with run_asgi(create_app(partner_code=PARTNER, username=USER, password=PASSWORD)) as url:
        connector = connect(wsdl_url=url + WSDL_PATH)
        assert connector.query("HD-1") is None
    with pytest.raises(Retryable, match="connection failed"):
        connector.query("HD-1")


# ---------------------------------------------------------------------------------------------- raw requests


XXE = ('<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">'
       '<!ENTITY marker "ENTITY-WAS-EXPANDED">]>')
RAW: list[tuple[str, bytes, str, str]] = [
    ("XXE", envelope(create_xml(bill_code="&xxe;&marker;"), doctype=XXE), bc.INVALID_REQUEST, "DOCTYPE"),
    ("not XML", b"<soap:Envelope><unclosed>", bc.INVALID_REQUEST, "XML"),
    ("not SOAP", b"<CreateBill/>", bc.INVALID_REQUEST, "Envelope"),
    ("unknown operation", envelope("<bc:DeleteBill/>"), bc.INVALID_REQUEST, "thao tác"),
    ("no UsernameToken", envelope(create_xml(), security=""), bc.AUTH_FAILED, "UsernameToken"),
    ("PasswordDigest", envelope(create_xml(), security=(
        f'<wsse:Security><wsse:UsernameToken><wsse:Username>{USER}</wsse:Username><wsse:Password Type="'
        f'{bc.USERNAME_PROFILE_NS}#PasswordDigest">x</wsse:Password></wsse:UsernameToken></wsse:Security>')),
     bc.AUTH_FAILED, "PasswordText"),
    ("bad amount", envelope(create_xml(amount="SO-TIEN-BI-MAT-4242")), bc.INVALID_REQUEST, "amount"),
]


@pytest.mark.parametrize(("body", "code", "words"), [row[1:] for row in RAW], ids=[row[0] for row in RAW])
def test_raw_requests_are_refused_with_a_client_fault(admin: httpx.Client, body: bytes, code: str,
                                                       words: str) -> None:
    response = admin.post(bc.ENDPOINT_PATH, content=body, headers={"content-type": "text/xml; charset=utf-8"})
    faultcode, detail_code, message = fault_of(response)
    assert (faultcode, detail_code) == ("soap:Client", code) and words in message
    for leaked in ("root:", "ENTITY-WAS-EXPANDED", "SO-TIEN-BI-MAT-4242", PASSWORD):
        assert leaked not in response.text
    assert admin.get("/_admin/bills").json() == []
    assert stats(admin)["answers"] == {code: 1}


# ---------------------------------------------------------------------------------------------- the tables


def fault(code: str | None, faultcode: str = "soap:Client") -> zeep.exceptions.Fault:
    detail = etree.Element("detail")
    if code is not None:
        info = etree.SubElement(detail, f"{{{bc.NAMESPACE}}}BillCollectionFault")
        etree.SubElement(info, f"{{{bc.NAMESPACE}}}code").text = code
    return zeep.exceptions.Fault("Thông báo của ngân hàng", code=faultcode, detail=detail)


FAULT_TABLE: list[tuple[str | None, type[DeliveryError], str]] = [
    (bc.AUTH_FAILED, Permanent, "check the bank destination's username and password"),
    (bc.PARTNER_UNKNOWN, Permanent, "check the bank destination's partner code"),
    (bc.INVALID_REQUEST, Permanent, "INVALID_REQUEST"),
    (bc.BILL_CONFLICT, Permanent, "BILL_CONFLICT"),
    (bc.SYSTEM_BUSY, Retryable, "SYSTEM_BUSY"),
    (bc.SYSTEM_ERROR, Retryable, "SYSTEM_ERROR"),
    ("QUOTA_EXCEEDED", Permanent, "(unknown code)"),
    (None, Permanent, "(unknown code)"),
]


@pytest.mark.parametrize(("code", "expected", "words"), FAULT_TABLE, ids=[str(row[0]) for row in FAULT_TABLE])
def test_fault_table_row(code: str | None, expected: type[DeliveryError], words: str) -> None:
    error = classify_fault("bank CreateBill", fault(code))
    assert type(error) is expected and words in error.reason
    assert "Thông báo của ngân hàng" in error.reason and error.reason.startswith("bank CreateBill: fault ")


def test_a_500_without_a_soap_fault_is_retryable() -> None:
    unknown = zeep.exceptions.Fault("Unknown fault occured", code=None, detail=b"<error>overloaded</error>")
    error = classify_fault("bank CreateBill", unknown)
    assert type(error) is Retryable and "without a SOAP fault" in error.reason


def test_the_fault_table_covers_the_contract_and_only_its_transient_codes_retry() -> None:
    assert set(FAULTS) == set(bc.FAULT_CODES)
    assert {code for code, kind in FAULTS.items() if kind is Retryable} == bc.TRANSIENT_FAULTS


def _transport_error(status: int, content: bytes = b"", headers: dict[str, str] | None = None) -> Exception:
    error = zeep.exceptions.TransportError("HTTP error", status_code=status, content=content)
    if headers:
        error.headers = headers  # type: ignore[attr-defined]
    return error


EXCEPTIONS: list[tuple[str, Exception, type[DeliveryError], str]] = [
    ("503", _transport_error(503), Retryable, "HTTP 503"),
    ("502 XML", _transport_error(502, b"<error>bad gateway</error>"), Retryable, "HTTP 502"),
    ("429 Retry-After", _transport_error(429, headers={"Retry-After": "30"}), Retryable, "HTTP 429"),
    ("404", _transport_error(404, b"<html>not found</html>"), Permanent, "HTTP 404 rejected"),
    ("302", _transport_error(302), Permanent, "HTTP 302 rejected"),
    ("200 not XML", _transport_error(200, b"<html>gateway</html>"), Retryable, "not SOAP"),
    ("read timeout", requests.exceptions.ReadTimeout("read timed out"), Retryable, "timeout"),
    ("connect timeout", requests.exceptions.ConnectTimeout("connect timed out"), Retryable, "timeout"),
    ("refused", requests.exceptions.ConnectionError("refused"), Retryable, "connection failed"),
    ("bad URL", requests.exceptions.InvalidSchema("no adapter"), Permanent, "bad service URL"),
    ("chunked", requests.exceptions.ChunkedEncodingError("cut"), Retryable, "HTTP transport error"),
    ("lxml syntax", etree.XMLSyntaxError("bad", 1, 1, 1), Retryable, "not the contract's SOAP"),
    ("zeep syntax", zeep.exceptions.XMLSyntaxError("bad"), Retryable, "not the contract's SOAP"),
    ("zeep parse", zeep.exceptions.XMLParseError("bad"), Retryable, "not the contract's SOAP"),
    ("DTD", zeep.exceptions.DTDForbidden("html", None, None), Retryable, "not the contract's SOAP"),
    ("our data", zeep.exceptions.ValidationError("Missing element", path=["CreateBill", "billCode"]),
     Permanent, "CreateBill.billCode does not fit"),
    ("zeep other", zeep.exceptions.IncompleteMessage("half"), Retryable, "zeep could not use the answer"),
]


@pytest.mark.parametrize(("exc", "expected", "words"), [row[1:] for row in EXCEPTIONS],
                         ids=[row[0] for row in EXCEPTIONS])
def test_exception_table_row(exc: Exception, expected: type[DeliveryError], words: str) -> None:
    with pytest.raises(DeliveryError) as caught, map_soap_errors("bank QueryTransaction"):
        raise exc
    error = caught.value
    assert type(error) is expected and words in error.reason and error.__cause__ is exc
    assert error.reason.startswith("bank QueryTransaction: ")
    if isinstance(exc, zeep.exceptions.TransportError) and exc.status_code == 429:
        assert error.retry_after == 30 and error.status_code == 429
