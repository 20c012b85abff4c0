"""The bank's bill-collection web service: create a bill, query it, list a day's settled transactions.

SOAP 1.1 as :mod:`schemas.bank` documents it, driven by zeep from the WSDL the bank serves, loaded once
on first use. Every request carries a WS-Security ``UsernameToken`` (``PasswordText``). This module knows
the transport, the result codes and the faults, not what a dossier or a fee is (that is the adapter's).

Error table (:data:`FAULTS` for the faults; tested row by row in ``tests/test_bank_soap.py``):

=========================  ============  ==========================================================
answer                     class         why
=========================  ============  ==========================================================
resultCode "00", "01"      success       ``create_bill``: created now, or by an earlier call
resultCode "04"            success       ``query`` answers ``None``
other resultCode           Permanent     unknown answers are shown, never retried forever
fault AUTH_FAILED          Permanent     the username or password is wrong: an operator fixes it
fault PARTNER_UNKNOWN      Permanent     the partner code is not this user's
fault INVALID_REQUEST      Permanent     the bank's message names the element
fault BILL_CONFLICT        Permanent     the bill code is taken with another amount
fault SYSTEM_BUSY          Retryable     busy: try again later
fault SYSTEM_ERROR         Retryable     the bank's own weather, like the portal's and the post's "99"
the rest                   as :mod:`connectors.soap` says (HTTP statuses, a 500 without a Fault, an
                                         answer not the contract's, timeouts, the WSDL, zeep's refusals)
=========================  ============  ==========================================================

``AUTH_FAILED`` is ``Permanent``, not ``AuthExpired``: a UsernameToken with ``PasswordText`` carries the
configured password itself, so there is nothing to renew and "refresh once, then retry" would only send
the same refused password again; banks also lock a user after a few failed logins, which retries would
bring about. The reason asks the operator to check the credentials (never showing them).

Every operation's connect and read timeouts are cut to what is left of the attempt
(:func:`connectors.base.attempt_deadline`), by the transport, per call and per thread. Loading the WSDL
is bounded by the same timeouts, cut when it happens. A read timeout bounds each read, not the whole answer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import date

from pydantic import SecretStr
from zeep.exceptions import Fault

from connectors import soap
from connectors.base import DeliveryError, Permanent, Retryable
from connectors.soap import FaultTable, SoapService
from schemas.bank import (
    AUTH_FAILED,
    BILL_CONFLICT,
    BILL_EXISTS,
    BILL_NOT_FOUND,
    CREATE_BILL,
    INVALID_REQUEST,
    LIST_SETTLED,
    PARTNER_UNKNOWN,
    QUERY_TRANSACTION,
    RESULT_CODES,
    SUCCESS,
    SYSTEM_BUSY,
    SYSTEM_ERROR,
    BillCreated,
    BillRequest,
    SettledTransaction,
    TransactionStatus,
)

FAULTS: dict[str, type[DeliveryError]] = {
    AUTH_FAILED: Permanent,
    PARTNER_UNKNOWN: Permanent,
    INVALID_REQUEST: Permanent,
    BILL_CONFLICT: Permanent,
    SYSTEM_BUSY: Retryable,
    SYSTEM_ERROR: Retryable,
}
HINTS: dict[str, str] = {
    AUTH_FAILED: " (check the bank destination's username and password)",
    PARTNER_UNKNOWN: " (check the bank destination's partner code)",
}
TABLE = FaultTable(FAULTS, HINTS)


def classify_fault(what: str, fault: Fault) -> DeliveryError:
    """The bank's fault as our error class (:data:`FAULTS`)."""
    return soap.classify_fault(what, fault, TABLE)


def map_soap_errors(what: str) -> AbstractContextManager[None]:
    """:func:`connectors.soap.map_soap_errors` with the bank's fault table."""
    return soap.map_soap_errors(what, TABLE)


class BankConnector:
    """Calls to one bank's bill-collection service for one partner; safe to share between threads."""

    def __init__(
        self,
        *,
        wsdl_url: str,
        partner_code: str,
        username: str,
        password: SecretStr,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        if not wsdl_url.startswith(("http://", "https://")):
            raise ValueError(f"bank WSDL URL must be http(s): {wsdl_url!r}")
        self.wsdl_url = wsdl_url
        self.partner_code = partner_code
        self._soap = SoapService(name="bank", wsdl_url=wsdl_url, table=TABLE, connect_timeout=connect_timeout,
                                 read_timeout=read_timeout, username=username, password=password,
                                 result_codes=RESULT_CODES)

    def create_bill(self, bill: BillRequest) -> BillCreated:
        """Create the bill; ``created`` is False when it existed with the same amount (an earlier attempt
        landed). Another amount for the same code is ``Permanent`` (``BILL_CONFLICT``)."""
        fields = bill.model_dump(include=set(BillRequest.model_fields), exclude_none=True)
        result = self._soap.call(CREATE_BILL, partnerCode=self.partner_code, **fields)
        code = self._soap.expect(CREATE_BILL, result, SUCCESS, BILL_EXISTS)
        return self._soap.model(BillCreated, CREATE_BILL, result | {"created": code == SUCCESS})

    def query(self, bill_code: str) -> TransactionStatus | None:
        """The bill as the bank holds it, or ``None`` when it has none by that code."""
        result = self._soap.call(QUERY_TRANSACTION, partnerCode=self.partner_code, billCode=bill_code)
        if self._soap.expect(QUERY_TRANSACTION, result, SUCCESS, BILL_NOT_FOUND) == BILL_NOT_FOUND:
            return None
        return self._soap.model(TransactionStatus, QUERY_TRANSACTION, result)

    def settled(self, day: date) -> list[SettledTransaction]:
        """The transactions the bank settled on ``day`` (paid that day, Vietnam time)."""
        result = self._soap.call(LIST_SETTLED, partnerCode=self.partner_code, settlementDate=day)
        self._soap.expect(LIST_SETTLED, result, SUCCESS)
        rows = (result.get("transactions") or {}).get("Transaction") or []
        return [self._soap.model(SettledTransaction, LIST_SETTLED, row) for row in rows]

    def close(self) -> None:
        self._soap.close()
