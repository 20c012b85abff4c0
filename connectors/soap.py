"""SOAP 1.1 plumbing shared by the services that speak it (the bank's bill collection, the LGSP's inter-level
exchange): zeep driven from the service's WSDL, loaded once on first use, its exceptions mapped to our error
classes, timeouts cut to the attempt's deadline per call.

A service module gives its fault table (:class:`FaultTable`: the code in ``detail//code`` → class, and hints
for the operator) and a name for reasons; :class:`SoapService` does the rest. What every SOAP service shares:

=========================  ============  ==========================================================
answer                     class         why
=========================  ============  ==========================================================
fault, code in the table   the table's
fault, another code        Permanent     shown with "(unknown code)"
HTTP status not 200/500,   (base table)  408/425/429/5xx retry (``Retry-After`` kept), other 4xx and
or an answer not XML                     3xx do not; a 200 that is not XML retries (a gateway's page)
HTTP 500 without a Fault   Retryable     zeep's "Unknown fault" (no ``faultcode``): the server's weather
answer not the contract's  Retryable     XML that zeep cannot read, a DOCTYPE, another shape
timeout, connection        Retryable
the WSDL cannot be loaded  Retryable     nothing is kept: the next call loads it again; its HTTP
                                         status is kept (a gateway's 401 is the caller's to judge)
request refused by zeep    Permanent     our data does not fit the WSDL (nothing was sent)
a URL off the WSDL's host  Permanent     :class:`ForeignURL`: the service's documents are not what the
                                         destination's configuration says (nothing was fetched)
=========================  ============  ==========================================================

The transport fetches nothing but ``http``/``https`` on the configured WSDL's host and port
(:class:`OriginSession`): a WSDL or schema ``import``/``include`` of a ``file://`` path, a local path, another
host or port, a redirect there, or a ``soap:address`` elsewhere is refused before any I/O. zeep's own
``forbid_external`` is off: it refuses every imported document over HTTP, the service's own included, and
follows ``file://`` ones; DTDs and entities stay forbidden.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import requests
import zeep
from lxml import etree
from pydantic import BaseModel, SecretStr, ValidationError
from requests.adapters import HTTPAdapter
from zeep.exceptions import (
    DTDForbidden,
    EntitiesForbidden,
    Fault,
    TransportError,
    UnexpectedElementError,
    XMLParseError,
    XMLSyntaxError,
)
from zeep.helpers import serialize_object
from zeep.wsse.username import UsernameToken

from connectors.base import DeliveryError, Permanent, Retryable, call_timeout, classify_http_status, excerpt

SETTINGS = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=False,
                         xml_huge_tree=False)
USER_AGENT = "motcua-relay/0.1"
POOL_SIZE = 100
_Model = TypeVar("_Model", bound=BaseModel)


class NotSoap(TransportError):
    """An answer no SOAP service gives (a gateway's page, a JSON error, a 503 of any kind): zeep's
    ``TransportError`` with the answer's headers, so that ``Retry-After`` reaches the retry decision."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}, not a SOAP answer", status_code=response.status_code,
                         content=response.content)
        self.headers = dict(response.headers)


class ForeignURL(Exception):
    """A URL the service's documents or answers lead to that is not ``http(s)`` on the WSDL's host and port."""

    def __init__(self, url: str, origin: str) -> None:
        super().__init__(f"refused {url[:200]!r}: only http(s) on {origin}, the WSDL's host, is fetched")
        self.url = url


def origin_of(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an ``http(s)`` URL, read as requests' adapter reads it to connect, else ``None``."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


class OriginSession(requests.Session):
    """requests' session for one service: every request it sends, each hop of a redirect included, goes to
    ``http(s)`` on the host and port of ``url``, or :class:`ForeignURL` is raised before anything is sent."""

    def __init__(self, url: str) -> None:
        super().__init__()
        origin = origin_of(url)
        if origin is None:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.origin = origin

    def check(self, url: str) -> None:
        if origin_of(url) != self.origin:
            raise ForeignURL(url, "{}:{}".format(*self.origin))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.check(request.url or "")
        return super().send(request, **kwargs)


def _timeout_pair(timeout: httpx.Timeout) -> tuple[float | None, float | None]:
    """requests' ``(connect, read)``."""
    return timeout.connect, timeout.read


def _is_xml(response: requests.Response) -> bool:
    media_type = response.headers.get("Content-Type", "text/xml").split(";")[0].strip().lower()
    return media_type.endswith(("/xml", "+xml"))


class DeadlineTransport(zeep.Transport):
    """zeep's transport for operations: timeouts cut to the attempt's deadline on each call, redirects not
    followed, an answer SOAP 1.1 does not give (a status other than 200 or 500 for a fault, a body that is not
    XML) stopped as :class:`NotSoap`, and nothing logged (zeep's DEBUG log of the envelope would show the
    password and the payer). The headers of :meth:`extra_headers` (a gateway's token) go with this thread's
    requests, the WSDL's included. Nothing is loaded but what ``session`` lets through (zeep's ``file://``
    adapter is taken off it, and its reading of local paths is never reached)."""

    def __init__(self, session: OriginSession, timeouts: httpx.Timeout) -> None:
        super().__init__(session=session, timeout=_timeout_pair(timeouts), operation_timeout=_timeout_pair(timeouts))
        self.session.adapters.pop("file://", None)
        self.origin_session = session
        self.session.headers["User-Agent"] = USER_AGENT
        self.timeouts = timeouts
        self._call = threading.local()

    @contextmanager
    def extra_headers(self, headers: Mapping[str, str] | None) -> Iterator[None]:
        """``headers`` on every request this thread makes inside (the transport is shared by the threads)."""
        previous = getattr(self._call, "headers", None)
        self._call.headers = dict(headers or {})
        try:
            yield
        finally:
            self._call.headers = previous

    def _extra(self) -> dict[str, str]:
        return getattr(self._call, "headers", None) or {}

    def post(self, address: str, message: bytes | str, headers: dict[str, str]) -> requests.Response:
        response = self.session.post(address, data=message, headers={**headers, **self._extra()},
                                     allow_redirects=False, timeout=_timeout_pair(call_timeout(self.timeouts)))
        if response.status_code not in (200, 500) or not _is_xml(response):
            raise NotSoap(response)
        return response

    def load(self, url: str) -> bytes:
        self.origin_session.check(url)
        return bytes(super().load(url))

    def _load_remote_data(self, url: str) -> bytes:
        """zeep's WSDL and XSD loading, with this thread's extra headers and without its DEBUG log."""
        response = self.session.get(url, headers=self._extra(), timeout=self.load_timeout)
        with closing(response):
            response.raise_for_status()
            return bytes(response.content)


def fault_code(fault: Fault) -> str | None:
    """The service's code in ``detail//code`` (any namespace)."""
    detail = fault.detail
    if not isinstance(detail, etree._Element):
        return None
    return (detail.findtext(".//{*}code") or "").strip() or None


@dataclass(frozen=True)
class FaultTable:
    """A service's fault codes (in ``detail//code``) and their classes, and hints appended to reasons."""

    faults: Mapping[str, type[DeliveryError]]
    hints: Mapping[str, str] = field(default_factory=dict)


def classify_fault(what: str, fault: Fault, table: FaultTable) -> DeliveryError:
    """The error class of the fault's code in ``table``, with the service's message; an answer without a
    ``faultcode`` is no SOAP fault but zeep's reading of an HTTP 500 without one."""
    message = str(fault.message or "").strip()[:300]
    if not fault.code:
        return Retryable(f"{what}: an HTTP error without a SOAP fault", excerpt=excerpt(str(fault.detail)))
    code = fault_code(fault)
    reason = f"{what}: fault {code or '(no code)'}" + (f" — {message}" if message else "")
    if code is None or code not in table.faults:
        reason += " (unknown code)"
    else:
        reason += table.hints.get(code, "")
    error_class = table.faults.get(code or "", Permanent)
    return error_class(reason, excerpt=excerpt(f"{fault.code} {code}: {message}"))


def classify_transport(what: str, exc: TransportError) -> DeliveryError:
    """An HTTP answer zeep could not use, by its status as :func:`~connectors.base.classify_http_status`
    has it; a success status without SOAP is a gateway's weather."""
    status = int(exc.status_code or 0)
    content = exc.content if isinstance(exc.content, bytes) else b""
    error = None
    if status >= 100 and not 200 <= status < 300:
        error = classify_http_status(httpx.Response(status, headers=getattr(exc, "headers", None), content=content))
    if error is None:
        error = Retryable("the answer is not SOAP", status_code=status or None, excerpt=excerpt(content))
    return error.within(what)


@contextmanager
def map_soap_errors(what: str, table: FaultTable) -> Iterator[None]:
    """Translate zeep's, requests' and lxml's exceptions into our classes (``raise … from exc``);
    ``what`` names the call in reasons."""
    try:
        yield
    except Fault as exc:
        raise classify_fault(what, exc, table) from exc
    except ForeignURL as exc:
        raise Permanent(f"{what}: {exc}", excerpt=exc.url) from exc
    except TransportError as exc:
        raise classify_transport(what, exc) from exc
    except requests.Timeout as exc:
        raise Retryable(f"{what}: timeout ({type(exc).__name__})") from exc
    except requests.ConnectionError as exc:
        raise Retryable(f"{what}: connection failed ({type(exc).__name__})", excerpt=excerpt(str(exc))) from exc
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema) as exc:
        raise Permanent(f"{what}: bad service URL ({type(exc).__name__})", excerpt=excerpt(str(exc))) from exc
    except requests.RequestException as exc:
        raise Retryable(f"{what}: HTTP transport error ({type(exc).__name__})", excerpt=excerpt(str(exc))) from exc
    except (etree.XMLSyntaxError, XMLSyntaxError, XMLParseError, DTDForbidden, EntitiesForbidden,
            UnexpectedElementError) as exc:
        raise Retryable(f"{what}: the answer is not the contract's SOAP ({type(exc).__name__})",
                        excerpt=excerpt(str(exc))) from exc
    except zeep.exceptions.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "the request"
        raise Permanent(f"{what}: {path} does not fit the service's WSDL (nothing was sent)",
                        excerpt=excerpt(str(exc))) from exc
    except zeep.exceptions.Error as exc:
        raise Retryable(f"{what}: zeep could not use the answer ({type(exc).__name__})",
                        excerpt=excerpt(str(exc))) from exc


class SoapService:
    """One SOAP service at ``wsdl_url``, with a WS-Security UsernameToken when ``username`` is given; safe to
    share between threads. ``name`` starts every reason ("bank", "LGSP exchange")."""

    def __init__(self, *, name: str, wsdl_url: str, table: FaultTable, connect_timeout: float, read_timeout: float,
                 username: str | None = None, password: SecretStr | None = None,
                 result_codes: Mapping[str, str] | None = None) -> None:
        if not wsdl_url.startswith(("http://", "https://")):
            raise ValueError(f"{name} WSDL URL must be http(s): {wsdl_url!r}")
        self.name, self.wsdl_url, self.table = name, wsdl_url, table
        self.result_codes = result_codes or {}
        self._username, self._password = username, password
        self._session = OriginSession(wsdl_url)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=POOL_SIZE)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        timeouts = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
        self._transport = DeadlineTransport(self._session, timeouts)
        self._client: zeep.Client | None = None
        self._lock = threading.Lock()

    def _service(self) -> Any:
        """The service proxy, loading the WSDL on first use; ``Retryable`` when it cannot be loaded."""
        with self._lock:
            if self._client is None:
                self._transport.load_timeout = _timeout_pair(call_timeout(self._transport.timeouts))
                token = (UsernameToken(self._username, self._password.get_secret_value() if self._password else "")
                         if self._username else None)
                try:
                    client = zeep.Client(self.wsdl_url, transport=self._transport, wsse=token, settings=SETTINGS)
                    client.service  # noqa: B018 (binds the service now: a WSDL without one fails here)
                except ForeignURL as exc:
                    raise Permanent(f"{self.name} WSDL: {exc} (check the destination's URL and the service's WSDL)",
                                    excerpt=exc.url) from exc
                except (requests.RequestException, zeep.exceptions.Error, etree.Error, ValueError) as exc:
                    status = getattr(getattr(exc, "response", None), "status_code", None)  # a gateway's 401
                    raise Retryable(f"{self.name} WSDL: cannot be loaded ("
                                    + (f"HTTP {status}" if status else type(exc).__name__) + ")",
                                    status_code=status, excerpt=excerpt(str(exc))) from exc
                self._client = client
            return self._client.service

    def call(self, operation: str, /, headers: Mapping[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        """The operation's result as a dict (``Retryable`` when there is none); ``headers`` go with this call's
        HTTP requests (a gateway's ``Authorization``), the WSDL's when it is loaded now."""
        what = f"{self.name} {operation}"
        with map_soap_errors(what, self.table), self._transport.extra_headers(headers):
            result = serialize_object(getattr(self._service(), operation)(**fields), dict)
        if not isinstance(result, dict):
            raise Retryable(f"{what}: the answer has no result", excerpt=excerpt(str(result)))
        return result

    def expect(self, operation: str, result: dict[str, Any], *codes: str) -> str:
        """The result code when it is one of ``codes``, else ``Permanent`` showing it."""
        code = str(result.get("resultCode") or "").strip()
        if code in codes:
            return code
        message = str(result.get("resultMessage") or "").strip()[:300]
        reason = f"{self.name} {operation}: result code {code or '(none)'}" + (f" — {message}" if message else "")
        reason += " (not an answer to this call)" if code in self.result_codes else " (unknown code)"
        raise Permanent(reason, excerpt=excerpt(str(result)))

    def model(self, model: type[_Model], operation: str, data: Any) -> _Model:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise Retryable(f"{self.name} {operation}: the answer is not the documented shape",
                            excerpt=excerpt(str(data))) from exc

    def close(self) -> None:
        with self._lock:
            self._client = None
        self._session.close()
