"""The SOAP transport fetches only ``http(s)`` from the configured WSDL's host and port: a hostile service's WSDL
that imports a local file, a schema on another host (another loopback port here), or redirects there is refused
as a permanent configuration error naming the URL, before anything is read; a WSDL whose imports stay on its host
still loads and its operation still answers. Real servers on loopback, zeep over HTTP, nothing mocked."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from connectors.base import Permanent, Retryable
from connectors.soap import FaultTable, ForeignURL, OriginSession, SoapService
from tests.servers import run_asgi

NS = "urn:motcua:test:echo:v1"
XML = "text/xml; charset=utf-8"

SCHEMA = f"""<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="{NS}" elementFormDefault="qualified">
  <xsd:element name="Echo"><xsd:complexType><xsd:sequence>
    <xsd:element name="text" type="xsd:string"/>
  </xsd:sequence></xsd:complexType></xsd:element>
  <xsd:element name="EchoResponse"><xsd:complexType><xsd:sequence>
    <xsd:element name="resultCode" type="xsd:string"/>
    <xsd:element name="text" type="xsd:string"/>
  </xsd:sequence></xsd:complexType></xsd:element>
</xsd:schema>"""


def wsdl(address: str, *, types: str = "", imports: str = "") -> str:
    """An echo service's WSDL at ``address``; ``types`` inside ``wsdl:types``' schema (an ``xsd:import`` of
    the elements), ``imports`` before it (a ``wsdl:import``)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="Echo" targetNamespace="{NS}" xmlns:tns="{NS}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  {imports}
  <wsdl:types>
    <xsd:schema targetNamespace="urn:motcua:test:echo:wrapper">{types}</xsd:schema>
  </wsdl:types>
  <wsdl:message name="EchoIn"><wsdl:part name="body" element="tns:Echo"/></wsdl:message>
  <wsdl:message name="EchoOut"><wsdl:part name="body" element="tns:EchoResponse"/></wsdl:message>
  <wsdl:portType name="EchoPort">
    <wsdl:operation name="Echo"><wsdl:input message="tns:EchoIn"/><wsdl:output message="tns:EchoOut"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="EchoBinding" type="tns:EchoPort">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="Echo"><soap:operation soapAction="urn:Echo"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="EchoService">
    <wsdl:port name="EchoPort" binding="tns:EchoBinding"><soap:address location="{address}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>"""


def xsd_import(location: str) -> str:
    return f'<xsd:import namespace="{NS}" schemaLocation="{location}"/>'


ANSWER = (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
          f'envelope/"><soap:Body><EchoResponse xmlns="{NS}"><resultCode>00</resultCode><text>ok</text>'
          f'</EchoResponse></soap:Body></soap:Envelope>')


class Service:
    """A loopback server that serves ``documents`` by path (``{self}`` and ``{other}`` filled with the two
    servers' base URLs) and answers every POST with the echo; what each server was asked is recorded."""

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.asked: list[str] = []
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.get("/{path:path}")(self.get)
        self.app.post("/{path:path}")(self.post)
        self.base = self.other = ""

    async def get(self, path: str, request: Request) -> Response:
        with self.lock:
            self.asked.append(f"GET /{path}")
        if f"/{path}" in self.redirects:
            return RedirectResponse(self.filled(self.redirects[f"/{path}"]), 302)
        document = self.documents.get(f"/{path}")
        if document is None:
            return Response(status_code=404)
        return Response(self.filled(document), media_type=XML)

    def filled(self, text: str) -> str:
        return text.replace("{self}", self.base).replace("{other}", self.other)

    async def post(self, path: str, request: Request) -> Response:
        with self.lock:
            self.asked.append(f"POST /{path}")
        return Response(ANSWER, media_type=XML)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Service, Service]]:
    home, other = Service(), Service()
    with run_asgi(home.app) as home_url, run_asgi(other.app) as other_url:
        for service in (home, other):
            service.base, service.other = (home_url, other_url) if service is home else (other_url, home_url)
        yield home, other


@pytest.fixture()
def home(servers: tuple[Service, Service]) -> Service:
    for service in servers:
        service.documents.clear()
        service.redirects.clear()
        service.asked.clear()
    return servers[0]


@pytest.fixture()
def other(servers: tuple[Service, Service], home: Service) -> Service:
    return servers[1]


def echo(url: str) -> dict[str, object]:
    service = SoapService(name="echo", wsdl_url=url, table=FaultTable({}), connect_timeout=2.0, read_timeout=5.0)
    try:
        return service.call("Echo", text="hello")
    finally:
        service.close()


def serve_wsdl(home: Service, *, types: str = "", imports: str = "") -> str:
    home.documents["/echo"] = wsdl("{self}/echo", types=types, imports=imports)
    return home.base + "/echo"


def test_a_wsdl_whose_imports_stay_on_its_host_loads_and_answers(home: Service) -> None:
    # given: the schema imported from the same host, by an absolute URL and through a same-host redirect
    home.documents["/types.xsd"] = SCHEMA
    home.redirects["/moved.xsd"] = "{self}/types.xsd"
    url = serve_wsdl(home, types=xsd_import("{self}/moved.xsd"))

    # when / then
    assert echo(url) == {"resultCode": "00", "text": "ok"}
    assert home.asked == ["GET /echo", "GET /moved.xsd", "GET /types.xsd", "POST /echo"]


def test_a_relative_import_stays_on_the_host(home: Service) -> None:
    home.documents["/types.xsd"] = SCHEMA
    assert echo(serve_wsdl(home, types=xsd_import("types.xsd")))["resultCode"] == "00"


@pytest.fixture()
def local_schema(tmp_path: Path) -> str:
    """A valid schema on the worker's disk: without the rule zeep would read it and the service would load."""
    path = tmp_path / "types.xsd"
    path.write_text(SCHEMA)
    return path.as_uri()


@pytest.mark.parametrize("how", ["xsd:import", "xsd:include", "wsdl:import"])
@pytest.mark.parametrize("target", ["/etc/passwd", "a valid local schema"])
def test_a_wsdl_importing_a_local_file_is_refused(home: Service, local_schema: str, how: str, target: str) -> None:
    # given
    location = "file:///etc/passwd" if target == "/etc/passwd" else local_schema
    if how == "xsd:import":
        url = serve_wsdl(home, types=xsd_import(location))
    elif how == "xsd:include":
        url = serve_wsdl(home, types=f'<xsd:include schemaLocation="{location}"/>')
    else:
        url = serve_wsdl(home, imports=f'<wsdl:import namespace="{NS}" location="{location}"/>')

    # when
    with pytest.raises(Permanent) as caught:
        echo(url)

    # then: named, refused before it was read, nothing posted
    assert caught.value.reason.startswith("echo WSDL: refused")
    assert location in caught.value.reason and "127.0.0.1" in caught.value.reason
    assert home.asked == ["GET /echo"]


@pytest.mark.parametrize("path", ["/etc/passwd", "~/.ssh/id_rsa"])
def test_a_local_path_resolves_on_the_host(home: Service, path: str) -> None:
    """A location without a scheme is relative to the WSDL's URL (on its host): never opened on the worker."""
    with pytest.raises(Retryable, match="HTTP 404"):
        echo(serve_wsdl(home, types=xsd_import(path)))
    assert home.asked == ["GET /echo", "GET /" + path.lstrip("/")]


def test_a_schema_on_another_host_is_refused_and_never_asked_for(home: Service, other: Service) -> None:
    other.documents["/types.xsd"] = SCHEMA
    url = serve_wsdl(home, types=xsd_import("{other}/types.xsd"))

    with pytest.raises(Permanent, match="echo WSDL: refused") as caught:
        echo(url)

    assert other.base + "/types.xsd" in caught.value.reason
    assert other.asked == []


def test_a_redirect_to_another_host_is_refused(home: Service, other: Service) -> None:
    other.documents["/types.xsd"] = SCHEMA
    home.redirects["/types.xsd"] = "{other}/types.xsd"
    url = serve_wsdl(home, types=xsd_import("types.xsd"))

    with pytest.raises(Permanent, match="refused") as caught:
        echo(url)

    assert other.base + "/types.xsd" in caught.value.reason
    assert home.asked == ["GET /echo", "GET /types.xsd"] and other.asked == []


def test_the_wsdl_itself_redirected_elsewhere_is_refused(home: Service, other: Service) -> None:
    other.documents["/echo"] = wsdl("{self}/echo")
    home.redirects["/echo"] = "{other}/echo"

    with pytest.raises(Permanent, match="refused"):
        echo(home.base + "/echo")
    assert other.asked == []


def test_an_operation_addressed_to_another_host_is_refused_and_not_sent(home: Service, other: Service) -> None:
    home.documents["/types.xsd"] = SCHEMA
    home.documents["/echo"] = wsdl("{other}/echo", types=xsd_import("types.xsd"))

    with pytest.raises(Permanent) as caught:
        echo(home.base + "/echo")

    assert caught.value.reason.startswith("echo Echo: refused") and other.base + "/echo" in caught.value.reason
    assert other.asked == [] and "POST /echo" not in home.asked


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://127.0.0.1:8731/soap?wsdl", True),
    ("HTTP://127.0.0.1:8731/other.xsd", True),
    ("https://127.0.0.1:8731/x", True),
    ("http://127.0.0.1/x", False),                    # port 80: another service
    ("http://127.0.0.1:8732/x", False),
    ("http://localhost:8731/x", False),               # the configured host as written, nothing resolved
    ("http://127.0.0.1:8731@127.0.0.2/x", False),     # userinfo: the host is 127.0.0.2
    ("file:///etc/passwd", False),
    ("/etc/passwd", False),
    ("ftp://127.0.0.1:8731/x", False),
    ("http://127.0.0.1:99999/x", False),
])
def test_origin_rule_row(url: str, allowed: bool) -> None:
    session = OriginSession("http://127.0.0.1:8731/soap?wsdl")
    if allowed:
        session.check(url)
    else:
        with pytest.raises(ForeignURL, match=re.escape("only http(s) on 127.0.0.1:8731")):
            session.check(url)


def test_a_url_is_judged_as_requests_prepares_it() -> None:
    """urllib's reading of the raw URL says 127.0.0.1; requests prepares it for 127.0.0.2, where it would
    connect, and that is what is judged (before anything is sent)."""
    session = OriginSession("http://127.0.0.1:8731/soap?wsdl")
    with pytest.raises(ForeignURL, match=re.escape("'http://127.0.0.2/")):
        session.get("http://127.0.0.2\\@127.0.0.1:8731/x", timeout=1)
