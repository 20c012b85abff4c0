"""Fee collection's deliverer: each assessed fee becomes one bill at the destination's provider.

``provider = "platform"`` is the national payment platform (KeyPay for DVCQG: JSON, HMAC-SHA256 checksums,
docs/contracts.md M1–M15); ``"bank"`` a bank's SOAP bill-collection service (zeep, from its WSDL). The bill's code
comes from the dossier and the fee (at the platform, its 20-character ``transaction_id``); a bill the ledger
already holds is not sent again, and otherwise the provider is asked first (a repeated attempt after a timeout
that landed finds the bill), and both providers answer a repeated creation with the first one's link. The bill
is stored (``store.payments``) and a ``fee.bill_created`` event carrying the payment link is ingested and routed
(to Zalo, where that destination exists, and back to the one-stop software).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator

from adapters.payment import (
    PaymentMapping,
    PaymentMappingError,
    Settlement,
    bank_bill,
    bill_code_of,
    bill_created_event,
    platform_bill,
)
from config.options import Duration, HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.payment import PlatformConnector
from connectors.settlement import SettlementEndpoint, SettlementFiles, SettlementSource
from schemas import bank as bank_wire
from schemas import payment as platform_wire
from schemas.events import Event, FeeAssessed
from schemas.privacy import error_fields
from services.base import Context, Deliverer
from services.checks import SKIPPED, Finding, reach, shown, then, wsdl
from store import payments, queries

if TYPE_CHECKING:
    from connectors.bank import BankConnector

# the transaction id doctor asks the platform about: no bill has it (a bill's is made from its dossier), at most
# 20 characters (M15)
PROBE_TRANSACTION = "MOTCUARELAYDOCTOR000"
# the dossier's events that name its procedure, for the bill's TenTTHC and TenDVC
NAMING_EVENTS = ("dossier.received", "dossier.submitted")


def _platform(values: Any) -> bool:
    return values.get("provider", "platform") == "platform"


def _bank(values: Any) -> bool:
    return values.get("provider", "platform") == "bank"


class PaymentOptions(ServiceOptions):
    """A payment destination: the provider and the relay's account there, whom the money goes to, how long
    bills without a callback are queried, and (for a bank whose QR payments notify so) the VNPAY-style IPN.

    The platform's (docs/contracts.md M1–M15, OpenCPS's KP_DVCQG_CONFIG): ``client_id``; ``request_key`` is
    hash_key_1 and ``callback_key`` hash_key_2; ``create_url``, ``detail_url`` and ``settlement_url`` default
    to paths under ``url``; ``command``/``version``/``locale``/``country_code``/``environment`` are the
    partner's registration, with OpenCPS's defaults; ``service_type`` (MaDichVu), ``agency_code`` and
    ``agency_name`` (MaDonVi, TenDonVi), ``service_code_suffix`` (what MaDVC adds to MaTTHC) and ``fee_type``
    (LoaiPhiLePhi) fill ``bill_info``; ``return_url`` is required. The portal's look-up of a dossier's payment
    (``dptracuuthanhtoanhs``) is answered to ``lookup_username`` with ``lookup_password``, and refused while no
    password is set. ``settlement_dir`` reads the day's settled list from the files a bank sends there instead
    of the endpoint."""

    provider: Literal["platform", "bank"] = "platform"
    url: HttpUrl
    client_id: str | None = None
    request_key: Annotated[SecretStr | None, Secret("MOTCUA_PAYMENT_REQUEST_KEY", required=_platform)] = None
    # verifies the platform's callbacks; several, comma-separated, while one rotates
    callback_key: Annotated[SecretStr | None, Secret("MOTCUA_PAYMENT_CALLBACK_KEY", required=False)] = None
    create_url: HttpUrl | None = None
    detail_url: HttpUrl | None = None
    settlement_url: HttpUrl | None = None
    settlement_dir: Path | None = None
    command: str = Field(platform_wire.COMMAND, min_length=1)
    version: str = Field(platform_wire.VERSION, min_length=1)
    locale: str = Field("vn", min_length=1)
    country_code: str = Field("vi", min_length=1)
    environment: Literal["1", "2"] = "1"
    service_type: str = Field("2", min_length=1)
    agency_code: str | None = None
    agency_name: str | None = None
    service_code_suffix: str = ""
    fee_type: int = 2
    lookup_username: str = Field("dvcqg", min_length=1)
    lookup_password: Annotated[SecretStr | None, Secret("MOTCUA_PAYMENT_LOOKUP_PASSWORD", required=False)] = None
    partner_code: str | None = None
    username: str | None = None
    password: Annotated[SecretStr | None, Secret("MOTCUA_BANK_PASSWORD", required=_bank)] = None
    vnpay_tmn_code: str | None = None
    vnpay_secret: Annotated[SecretStr | None, Secret("MOTCUA_PAYMENT_VNPAY_SECRET", required=False)] = None
    return_url: str = ""
    beneficiary_account: str
    beneficiary_name: str
    beneficiary_bank: str
    origin: str = "payment"
    query_after: Duration = 30 * 60
    query_every: Duration = 3600
    query_for: Duration = 7 * 86400
    query_batch: int = Field(200, ge=1, le=5000)

    @model_validator(mode="after")
    def _provider_needs(self) -> PaymentOptions:
        if self.provider == "platform" and not self.client_id:
            raise ValueError("the payment platform needs a client_id")
        if self.provider == "platform" and not self.return_url:
            raise ValueError("the payment platform needs a return_url (where citizens come back after paying: "
                             "the create-transaction carries it, M1)")
        if self.provider == "bank" and not (self.partner_code and self.username):
            raise ValueError("the bank needs a partner_code and a username")
        self.mapping()
        return self

    def endpoint(self, option: str) -> str:
        """``create_url``, ``detail_url`` or ``settlement_url``: the option, else its default path under ``url``."""
        paths = {"create_url": platform_wire.CREATE_PATH, "detail_url": platform_wire.DETAIL_PATH,
                 "settlement_url": platform_wire.SETTLEMENT_PATH}
        given = getattr(self, option)
        return str(given) if given else self.url.rstrip("/") + paths[option]

    def mapping(self) -> PaymentMapping:
        return PaymentMapping.from_options(self.model_dump(include={
            "provider", "beneficiary_account", "beneficiary_name", "beneficiary_bank", "return_url", "origin",
            "service_type", "agency_code", "agency_name", "service_code_suffix", "fee_type"}))


def procedure_name(context: Context, dossier_code: str) -> str | None:
    """The dossier's procedure name, from the last of its events that names one (``None`` when none does)."""
    found = None
    for stored in queries.event_payloads(context.engine, [dossier_code], NAMING_EVENTS):
        name = (stored.payload.get("data") or {}).get("procedure_name")
        found = name or found
    return found


@dataclass(frozen=True)
class ProviderPayment:
    """A payment as a provider reports it (by query or in a settlement list)."""

    bill_code: str
    transaction_id: str
    amount: int
    paid_at: datetime


@dataclass(frozen=True)
class Book:
    """A payment destination's side of the ledger: where the callbacks, the query and the reconciliation record
    what they learnt (no connector: the API records callbacks without calling the provider)."""

    context: Context
    name: str
    mapping: PaymentMapping

    @classmethod
    def of(cls, ctx: Context, name: str) -> Book:
        return cls(ctx, name, ctx.options_of(PaymentOptions, name).mapping())


class PaymentDeliverer(Deliverer[PaymentOptions]):
    """Adapter + connector for one payment destination, and what its callbacks and beat jobs ask of the provider."""

    def __init__(self, destination: Destination, options: PaymentOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.mapping = options.mapping()
        self.book = Book(context, destination.name, self.mapping)
        self.provider = options.provider
        self.platform: PlatformConnector | None = None
        self.settlements: SettlementSource | None = None
        self.bank: BankConnector | None = None
        timeouts = destination.timeouts
        if options.provider == "platform":
            assert options.client_id is not None and options.request_key is not None  # the options say so
            http = build_http_client(timeouts.connect, timeouts.read, context.settings.worker_concurrency)
            self.platform = PlatformConnector(
                create_url=options.endpoint("create_url"), detail_url=options.endpoint("detail_url"),
                client_id=options.client_id, request_key=options.request_key, client=http, command=options.command,
                version=options.version, locale=options.locale, country_code=options.country_code,
                environment=options.environment)
            self.settlements = (SettlementFiles(options.settlement_dir) if options.settlement_dir else
                                SettlementEndpoint(url=options.endpoint("settlement_url"), client_id=options.client_id,
                                                   request_key=options.request_key, client=http))
        else:
            assert options.partner_code and options.username and options.password is not None
            wsdl = options.url if "?" in options.url else f"{options.url.rstrip('/')}{bank_wire.ENDPOINT_PATH}?wsdl"
            from connectors.bank import BankConnector  # zeep: loaded only where a bank is configured

            self.bank = BankConnector(
                wsdl_url=wsdl, partner_code=options.partner_code, username=options.username,
                password=options.password, connect_timeout=timeouts.connect, read_timeout=timeouts.read)

    # ---- out: bills

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        if not isinstance(event, FeeAssessed):
            raise Permanent(f"the payment provider takes assessed fees, not {event.type}")
        data = event.data
        code = bill_code_of(self.provider, event.dossier_code, data.fee_id)
        engine = self.context.engine
        held = payments.get_bill(engine, code)
        if held is not None and (held.dossier_code, held.fee_id) != (event.dossier_code, data.fee_id):
            raise Permanent(f"bill code {code} is already the bill of fee {held.fee_id} of dossier "
                            f"{held.dossier_code}: two fees would share one transaction")
        if held is not None:
            state = f"already issued ({held.state})"
            url, ref = held.payment_url or "", held.external_ref
        else:
            try:
                url, ref, state = self._issue(event)
            except PaymentMappingError as exc:
                raise Permanent(str(exc)) from exc
            except ValidationError as exc:
                raise Permanent(f"the bill would be invalid: {', '.join(error_fields(exc))}") from exc
            payments.record_bill(engine, payments.NewBill(
                bill_code=code, destination=self.name, provider=self.provider, dossier_code=event.dossier_code,
                fee_id=data.fee_id, amount=int(data.amount), assessed_event_id=event.event_id,
                payment_url=url or None, external_ref=ref), datetime.now(UTC))
        created = bill_created_event(event, self.mapping, code, url, datetime.now(UTC))
        self.context.ingest_numbered([created], in_arrival_order=True)
        return ConnectorResult(status_code=200, external_ref=ref or code,
                               excerpt=f"bill {code} {state} at the {self.provider}, {data.amount} đ")

    def _issue(self, event: FeeAssessed) -> tuple[str, str | None, str]:
        """Create the bill at the provider, asking first: ``(payment url, provider's reference, what happened)``."""
        if self.platform is not None:
            bill = platform_bill(event, self.mapping, procedure_name(self.context, event.dossier_code))
            found = self.platform.detail(bill.transaction_id)
            if (found is not None and found.trans_amount not in (None, bill.amount)
                    and found.status != platform_wire.PAID):
                raise Permanent(f"transaction {bill.transaction_id} exists at the platform with another amount "
                                f"({found.trans_amount}, the fee is {bill.amount})")
            answer = self.platform.create(bill.transaction_id, bill.amount, bill.description, bill.bill_info,
                                          self.mapping.return_url)
            return answer.payment_url or "", bill.transaction_id, ("created" if found is None
                                                                   else "already held by the platform")
        assert self.bank is not None
        request = bank_bill(event, self.mapping)
        found_bill = self.bank.query(request.billCode)
        if found_bill is not None and found_bill.amount not in (None, request.amount):
            raise Permanent(f"bill {request.billCode} exists at the bank with another amount "
                            f"({found_bill.amount}, the fee is {request.amount})")
        made = self.bank.create_bill(request)
        return made.paymentUrl, made.bankReference, ("created" if made.created and found_bill is None
                                                     else "already held by the bank")

    # ---- in: what the provider says of a bill, and of a day

    def query(self, code: str) -> ProviderPayment | None:
        """The payment of a bill as the provider holds it, or ``None`` while it is unpaid (or unknown).

        The platform's detail answer has no payment time (as its callback has none): the payment is dated when
        the relay learns of it, now."""
        if self.platform is not None:
            answer = self.platform.detail(code)
            if answer is None or answer.status != platform_wire.PAID:
                return None
            return ProviderPayment(code, answer.transaction_code, int(answer.trans_amount or 0), datetime.now(UTC))
        assert self.bank is not None
        status = self.bank.query(code)
        if status is None or status.status != bank_wire.PAID or status.paidAt is None:
            return None
        return ProviderPayment(code, status.transactionId or "", int(status.paidAmount or 0), status.paidAt)

    def settled(self, day: date) -> list[Settlement]:
        """The provider's list of the payments settled on ``day``."""
        if self.settlements is not None:
            return [Settlement(s.transaction_id, s.transaction_code, s.trans_amount,
                               platform_wire.parse_time(s.payment_time)) for s in self.settlements.settled(day)]
        assert self.bank is not None
        return [Settlement(s.billCode, s.transactionId, s.amount, s.paidAt) for s in self.bank.settled(day)]

    def check(self, timeout: float) -> list[Finding]:
        """The provider answers and takes the relay's account, without a bill. The platform has no log-in: a
        detail-transaction (M11) of an id no bill has, signed with hash_key_1, is answered "not found" only to a
        ``client_id`` and checksum it accepts. A bank's WSDL must declare the operations the connector calls; its
        WS-Security password is not tried (banks lock a user after a few failed log-ins): the first bill does."""
        reached = reach(self.options.url, timeout)
        if self.platform is not None:
            platform = self.platform

            def detail() -> str:
                held = platform.detail(PROBE_TRANSACTION)
                said = "not found" if held is None else "a transaction"
                return (f"a detail-transaction of an id no bill has was answered ({said}): client_id and request "
                        "key (hash_key_1) accepted")

            return [reached, then(reached, "account", platform.detail_url, timeout, detail)]
        assert self.bank is not None
        return [reached, wsdl(self.bank.wsdl_url, bank_wire.OPERATIONS, timeout),
                Finding("account", shown(self.bank.wsdl_url), SKIPPED,
                        f"the WS-Security password of {self.options.username} is tried by the first bill, not by "
                        "doctor: a bank locks a user after a few failed log-ins")]

    def close(self) -> None:
        if self.platform is not None:
            self.platform.close()
        if self.settlements is not None:
            self.settlements.close()
        if self.bank is not None:
            self.bank.close()
