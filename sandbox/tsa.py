"""Simulator of an RFC 3161 time-stamping authority (TSA): what time-stamps the audit chain's checkpoints.

RFC 3161's HTTP transport (§3.4) on one loopback base URL:

- ``POST /``, ``Content-Type: application/timestamp-query``, a DER TimeStampReq → HTTP 200,
  ``application/timestamp-reply``, a DER TimeStampResp. Another content type is answered HTTP 415.
- ``GET /certificate``: the authority's certificate (PEM), the one its tokens are checked against.

A request is granted a token (CMS SignedData over a TSTInfo: the authority's policy, a serial number counting up
from 1, genTime, the accuracy, the request's nonce echoed, the authority's name; the certificate embedded when the
request sets certReq) unless the first failing check below refuses it, as status ``rejection`` (2) with the
PKIFailureInfo bit RFC 3161 names::

    badRequest           the body is not a DER TimeStampReq v1
    badAlg               the imprint's hash is not SHA-256, SHA-384 or SHA-512
    badDataFormat        the imprint's length is not its hash's
    unacceptedPolicy     reqPolicy names a policy the authority does not have
    unacceptedExtension  the request has extensions (the authority knows none)

The authority's key is generated (RSA 2048, ECDSA P-256 or Ed25519: :meth:`Authority.generate`, with a
self-signed certificate whose extended key usage is timeStamping, critical) or given (:class:`Authority` of a key
and a certificate). Signed attributes: content type, message digest, signing certificate v2 (RFC 5035). Ed25519
tokens digest with SHA-512 (RFC 8419); the others with SHA-256.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`): ``latency_ms`` (+ ``latency_jitter_ms``)
delays every answer; ``fail_next`` answers the next N requests HTTP ``error_status`` (503), plain text;
``reject_next`` answers the next N with status ``rejection`` and failInfo ``systemFailure``; ``error_rate``
answers HTTP ``error_status`` at random (seeded).

Admin: ``GET /_admin/stats`` (tokens issued, refusals by failInfo, faults), ``POST /_admin/reset`` (counters and
faults; serial numbers go on counting, as a real authority's never repeat). Nothing a request carries is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from asn1crypto import algos, cms, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import Field

from sandbox.faults import ActiveFaults, BaseFaults, add_fault_routes, add_state_routes

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
PEM_TYPE = "application/x-pem-file"
POLICY = "1.3.6.1.4.1.59999.3161.1"  # a private-enterprise arc: the sandbox's own policy
IMPRINT_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

KeyType = Literal["rsa", "ecdsa", "ed25519"]
SignerId = Literal["issuer_serial", "key_id"]
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class FaultConfig(BaseFaults):
    """Faults injected into the authority's answers (the countdowns start again each time they are set)."""

    fail_next: int = Field(0, ge=0, le=1_000_000)
    reject_next: int = Field(0, ge=0, le=1_000_000)


_ActiveFaults = ActiveFaults[FaultConfig]


class Refused(Exception):
    """A request the authority turns down: the PKIFailureInfo bit (asn1crypto's name) and the words it says."""

    def __init__(self, failure: str, text: str) -> None:
        super().__init__(text)
        self.failure = failure
        self.text = text


@dataclass(frozen=True)
class Authority:
    """A time-stamping authority's key and certificate, and how its tokens name it."""

    key: SigningKey
    certificate: x509.Certificate
    signer_id: SignerId = "issuer_serial"

    @classmethod
    def generate(cls, key_type: KeyType = "rsa", *, name: str = "motcua-relay sandbox TSA",
                 signer_id: SignerId = "issuer_serial", valid_days: int = 3650) -> Authority:
        """A new key and its self-signed certificate: extended key usage timeStamping (critical), key usage
        digitalSignature and nonRepudiation, valid from a day ago."""
        key: SigningKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif key_type == "ecdsa":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        return cls(key, self_signed(key, name, valid_days=valid_days), signer_id)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def digest_algorithm(self) -> str:
        return "sha512" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "sha256"

    def sign(self, data: bytes) -> tuple[str, bytes]:
        """The signature algorithm's name (asn1crypto's) and the signature of ``data``."""
        key = self.key
        if isinstance(key, rsa.RSAPrivateKey):
            return "sha256_rsa", key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return "sha256_ecdsa", key.sign(data, ec.ECDSA(hashes.SHA256()))
        return "ed25519", key.sign(data)


def self_signed(key: SigningKey, name: str, *, valid_days: int = 3650, eku_critical: bool = True,
                purposes: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.TIME_STAMPING,),
                ) -> x509.Certificate:
    """A self-signed certificate for ``key``, for time-stamping unless ``purposes`` or ``eku_critical`` say
    otherwise (to build the certificates a verifier must refuse)."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "motcua-relay sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    now = datetime.now(UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(purposes)), critical=eku_critical)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def read_request(body: bytes, policies: frozenset[str]) -> tsp.TimeStampReq:
    """The request, or :class:`Refused` with the first check it fails (the table above)."""
    try:
        query = tsp.TimeStampReq.load(body, strict=True)
        query.native  # noqa: B018 - asn1crypto parses lazily: a malformed field fails here
    except (ValueError, TypeError, KeyError):
        raise Refused("bad_request", "the body is not a DER TimeStampReq") from None
    if query["version"].native != "v1":
        raise Refused("bad_request", "only TimeStampReq version 1 is served")
    imprint = query["message_imprint"]
    algorithm = imprint["hash_algorithm"]["algorithm"].native
    if algorithm not in IMPRINT_SIZES:
        raise Refused("bad_alg", f"hash algorithm {algorithm} is not accepted (SHA-256, SHA-384, SHA-512)")
    if len(imprint["hashed_message"].native) != IMPRINT_SIZES[algorithm]:
        raise Refused("bad_data_format", f"a {algorithm} imprint has {IMPRINT_SIZES[algorithm]} bytes")
    policy = query["req_policy"].native
    if policy is not None and policy not in policies:
        raise Refused("unaccepted_policy", f"policy {policy} is not this authority's")
    if query["extensions"].native:
        raise Refused("unaccepted_extensions", "no request extension is supported")
    return query


def rejection(failure: str, text: str) -> bytes:
    """A TimeStampResp of status rejection with one PKIFailureInfo bit."""
    status = tsp.PKIStatusInfo({"status": "rejection", "status_string": [text], "fail_info": {failure}})
    # a SEQUENCE of the status alone (asn1crypto's TimeStampResp will not leave the token out)
    return bytes(parser.emit(0, 1, 16, status.dump()))


@dataclass
class TsaState:
    """The authority, its serial numbers, counters and faults."""

    authority: Authority
    policy: str = POLICY
    accuracy_ms: int = 100
    name_tsa: bool = True
    serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    counters: Counter[str] = field(default_factory=Counter)
    fail_left: int = field(default=0, init=False)  # the faults' countdowns: HTTP errors, then rejections
    reject_left: int = field(default=0, init=False)
    _faults: _ActiveFaults | None = field(default=None, init=False)

    @property
    def faults(self) -> _ActiveFaults | None:
        return self._faults

    @faults.setter
    def faults(self, value: _ActiveFaults | None) -> None:
        self._faults = value
        self.fail_left = value.config.fail_next if value is not None else 0
        self.reject_left = value.config.reject_next if value is not None else 0

    def reset(self) -> None:
        self.counters.clear()
        self.faults = None

    @property
    def issued(self) -> int:
        """Tokens issued since the last reset."""
        return self.counters["tokens"]

    def stats(self) -> dict[str, Any]:
        c = self.counters
        refused = {k.removeprefix("refused_"): v for k, v in c.items() if k.startswith("refused_")}
        return {
            "tokens": self.issued, "refused": refused,
            "faults": {"http": c["fault_http"], "rejected": c["fault_rejected"]},
        }

    def answer(self, body: bytes, now: datetime | None = None) -> bytes:
        """The TimeStampResp (DER) to a TimeStampReq's bytes."""
        try:
            query = read_request(body, frozenset({self.policy}))
        except Refused as refused:
            self.counters[f"refused_{refused.failure}"] += 1
            return rejection(refused.failure, refused.text)
        token = self.token(query, now or datetime.now(UTC))
        self.counters["tokens"] += 1
        return bytes(tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump())

    def token(self, query: tsp.TimeStampReq, now: datetime) -> cms.ContentInfo:
        """The signed token for a request that passed :func:`read_request`."""
        authority = self.authority
        certificate = asn1_x509.Certificate.load(authority.certificate.public_bytes(serialization.Encoding.DER))
        info: dict[str, Any] = {
            "version": "v1",
            "policy": query["req_policy"].native or self.policy,
            "message_imprint": query["message_imprint"].copy(),
            "serial_number": next(self.serials),
            "gen_time": now.astimezone(UTC),
        }
        seconds, millis = divmod(self.accuracy_ms, 1000)
        if seconds or millis:
            info["accuracy"] = {**({"seconds": seconds} if seconds else {}), **({"millis": millis} if millis else {})}
        if query["nonce"].native is not None:
            info["nonce"] = query["nonce"].native
        if self.name_tsa:
            info["tsa"] = asn1_x509.GeneralName({"directory_name": certificate.subject})
        tst_info = tsp.TSTInfo(info)
        digest_name = authority.digest_algorithm
        issuer_serial = {"issuer": [asn1_x509.GeneralName({"directory_name": certificate.issuer})],
                         "serial_number": certificate.serial_number}
        signed_attrs = cms.CMSAttributes([
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "message_digest",
                              "values": [hashlib.new(digest_name, tst_info.dump()).digest()]}),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [{"certs": [{
                "hash_algorithm": {"algorithm": "sha256"},
                "cert_hash": hashlib.sha256(certificate.dump()).digest(),
                "issuer_serial": issuer_serial,
            }]}]}),
        ])
        signature_name, signature = authority.sign(signed_attrs.dump())
        if authority.signer_id == "key_id":
            sid = cms.SignerIdentifier({"subject_key_identifier": certificate.key_identifier})
        else:
            sid = cms.SignerIdentifier({"issuer_and_serial_number": {
                "issuer": certificate.issuer, "serial_number": certificate.serial_number}})
        signer = cms.SignerInfo({
            "version": "v3" if authority.signer_id == "key_id" else "v1",
            "sid": sid,
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest_name}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": signature_name}),
            "signature": signature,
        })
        signed: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest_name})],
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "signer_infos": [signer],
        }
        if query["cert_req"].native:
            signed["certificates"] = [certificate]
        return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed)})


def _media_type(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def create_app(*, authority: Authority | None = None, key_type: KeyType = "rsa", policy: str = POLICY,
               accuracy_ms: int = 100, name_tsa: bool = True) -> FastAPI:
    """Build the time-stamping authority's simulator: its ``authority`` (else one generated with a
    ``key_type`` key), its one ``policy``, the ``accuracy_ms`` its tokens state, whether they name it."""
    state = TsaState(authority or Authority.generate(key_type), policy=policy, accuracy_ms=accuracy_ms,
                     name_tsa=name_tsa)
    app = FastAPI(title="motcua-relay sandbox: RFC 3161 time-stamping authority", docs_url=None, redoc_url=None)
    app.state.tsa = state

    @app.post("/")
    async def stamp(request: Request) -> Response:
        faults = state.faults
        if faults is not None:
            if faults.config.latency_ms or faults.config.latency_jitter_ms:
                await asyncio.sleep(faults.latency())
            if state.fail_left > 0 or faults.draw(faults.config.error_rate):
                state.fail_left = max(0, state.fail_left - 1)
                state.counters["fault_http"] += 1
                return Response("injected fault", status_code=faults.config.error_status, media_type="text/plain")
        if _media_type(request.headers.get("content-type")) != QUERY_TYPE:
            return Response(f"expected {QUERY_TYPE}", status_code=415, media_type="text/plain")
        body = await request.body()
        if state.reject_left > 0:
            state.reject_left -= 1
            state.counters["fault_rejected"] += 1
            return Response(rejection("system_failure", "injected fault"), media_type=REPLY_TYPE)
        return Response(state.answer(body), media_type=REPLY_TYPE)

    @app.get("/certificate")
    async def certificate() -> Response:
        return Response(state.authority.certificate_pem, media_type=PEM_TYPE)

    add_fault_routes(app, state, FaultConfig)
    add_state_routes(app, state)
    return app
