"""SOAP 1.1 on the simulators' side, shared by the bank (``sandbox/bank.py``) and the LGSP exchange
(``sandbox/lgsp.py``): reading an envelope safely, finding its operation, the WS-Security UsernameToken,
writing envelopes and faults, and serving the WSDL at ``?wsdl`` with the address it was asked on.

Each service keeps its own contract (namespace, operations, codes, how its fields are read); the refusals
here are its ``INVALID_REQUEST``-like code with the Vietnamese messages every simulator gives.
"""

from __future__ import annotations

import copy
import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from lxml import etree

from sandbox.faults import error_response

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SOAP, WSSE = f"{{{SOAP_ENV_NS}}}", f"{{{WSSE_NS}}}"
XML_TYPE = "text/xml; charset=utf-8"
PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True
)  # used by each app's event loop thread only
_WSDL_ADDRESS = ".//{http://schemas.xmlsoap.org/wsdl/soap/}address"


class SoapFault(Exception):
    """A refusal: the service's fault code and its message (Vietnamese, as the service writes it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def read_envelope(body: bytes, max_body: int, invalid: str) -> etree._Element:
    """The request's SOAP 1.1 envelope, read without entities, network or DTDs; ``invalid`` for anything else."""
    if len(body) > max_body:
        raise SoapFault(invalid, "Yêu cầu không hợp lệ: quá lớn")
    try:
        root = etree.fromstring(body, PARSER)
    except etree.XMLSyntaxError:
        raise SoapFault(invalid, "Yêu cầu không hợp lệ: XML không đúng cú pháp") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise SoapFault(invalid, "Yêu cầu không hợp lệ: không chấp nhận DOCTYPE")
    if root.tag != SOAP + "Envelope":
        raise SoapFault(invalid, "Yêu cầu không hợp lệ: không phải SOAP 1.1 Envelope")
    return root


def operation_element(envelope: etree._Element, namespace: str, operations: tuple[str, ...],
                      invalid: str) -> etree._Element:
    """The body's one element, when it names one of ``operations`` in ``namespace``."""
    body = envelope.find(SOAP + "Body")
    elements = [] if body is None else [child for child in body if isinstance(child.tag, str)]
    name = etree.QName(elements[0]) if len(elements) == 1 else None
    if name is None or name.namespace != namespace or name.localname not in operations:
        raise SoapFault(invalid, "Yêu cầu không hợp lệ: không có thao tác được hỗ trợ")
    return elements[0]


def username_token(envelope: etree._Element) -> tuple[str, etree._Element] | None:
    """The header's WS-Security ``UsernameToken``: its username and its ``Password`` element, or ``None``."""
    token = envelope.find(f"{SOAP}Header/{WSSE}Security/{WSSE}UsernameToken")
    password = None if token is None else token.find(WSSE + "Password")
    if token is None or password is None:
        return None
    return token.findtext(WSSE + "Username") or "", password


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a credential."""
    return hmac.compare_digest(given.encode(), expected.encode())


def envelope_bytes(content: etree._Element, nsmap: dict[str, str]) -> bytes:
    envelope = etree.Element(SOAP + "Envelope", nsmap=nsmap)
    etree.SubElement(envelope, SOAP + "Body").append(content)
    etree.cleanup_namespaces(envelope)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def fault_response(fault: SoapFault, *, detail: str, server_codes: frozenset[str],
                   nsmap: dict[str, str]) -> Response:
    """HTTP 500 with ``soap:Fault``: ``soap:Server`` for the ``server_codes`` (transient), else ``soap:Client``;
    ``detail`` is the qualified name of the element carrying ``code`` and ``message``."""
    node = etree.Element(SOAP + "Fault", nsmap=nsmap)
    etree.SubElement(node, "faultcode").text = "soap:Server" if fault.code in server_codes else "soap:Client"
    etree.SubElement(node, "faultstring").text = fault.message
    element = etree.SubElement(etree.SubElement(node, "detail"), detail)
    namespace = etree.QName(detail).namespace
    for name, value in (("code", fault.code), ("message", fault.message)):
        etree.SubElement(element, f"{{{namespace}}}{name}").text = value
    return Response(envelope_bytes(node, nsmap), status_code=500, media_type=XML_TYPE)


def add_wsdl_route(app: FastAPI, path: str, wsdl: str) -> None:
    """``GET <path>?wsdl``: the service description, its ``soap:address`` set to the URL it was asked on
    (any port works); other ``GET`` requests are 404 saying where to look."""
    document = etree.fromstring(wsdl.encode())

    @app.get(path)
    async def get_wsdl(request: Request) -> Any:
        if "wsdl" not in {name.lower() for name in request.query_params}:
            return error_response(404, "POST SOAP 1.1 requests here; the service description is at ?wsdl")
        answer = copy.deepcopy(document)
        address = answer.find(_WSDL_ADDRESS)
        assert address is not None
        address.set("location", str(request.url.replace(query="")))
        return Response(etree.tostring(answer, xml_declaration=True, encoding="utf-8"), media_type=XML_TYPE)
