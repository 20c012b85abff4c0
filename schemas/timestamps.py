"""RFC 3161 time-stamps of the audit chain's checkpoints: the request, the reply and the token's check (pure: no
network, no database).

A checkpoint's ``tsa_token`` is a TimeStampToken whose message imprint is the SHA-256 of the checkpoint's body
(``docs/audit.md``). :func:`request` writes the TimeStampReq for that digest, :func:`reply_token` takes the token
out of the authority's TimeStampResp, and :func:`verify_token` is what ``audit verify`` runs on every token::

    ValueError
    ├── TimestampInvalid    not a token, not over this digest, not this nonce, or not signed by a trusted
    │                       authority's certificate (the reason says which check failed)
    └── TimestampRefused    the authority answered, and its answer was no: ``status`` and ``fail_info``
                            name the PKIStatus and PKIFailureInfo in RFC 3161's words

A token is trusted only when its SignerInfo names one of the certificates given to :func:`verify_token` (by
issuer and serial number, or by subject key identifier) and the signature verifies under that certificate's key;
certificates the token embeds are never trusted for themselves. The certificate must carry the critical extended
key usage id-kp-timeStamping (RFC 3161 §2.3) and be valid at the token's genTime. Signers: RSA (PKCS#1 v1.5),
ECDSA (P-256, P-384) and Ed25519 (RFC 8419: the signed attributes signed as they are).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms, core, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

DIGEST_SIZE = 32  # the imprint is the SHA-256 of a checkpoint's body
GRANTED = frozenset({"granted", "granted_with_mods"})

# asn1crypto's names → RFC 3161's
STATUS_NAMES = {
    "granted": "granted", "granted_with_mods": "grantedWithMods", "rejection": "rejection", "waiting": "waiting",
    "revocation_warning": "revocationWarning", "revocation_notification": "revocationNotification",
}
FAILURE_NAMES = {
    "bad_alg": "badAlg", "bad_request": "badRequest", "bad_data_format": "badDataFormat",
    "time_not_available": "timeNotAvailable", "unaccepted_policy": "unacceptedPolicy",
    "unaccepted_extensions": "unacceptedExtension", "add_info_not_available": "addInfoNotAvailable",
    "system_failure": "systemFailure",
}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
_CURVES = (ec.SECP256R1, ec.SECP384R1)
_STATUS_TEXT_LIMIT = 200


class TimestampInvalid(ValueError):
    """A token (or a reply) that does not check out; the message says which check failed."""


class TimestampRefused(ValueError):
    """The authority's answer was not granted: its PKIStatus, its PKIFailureInfo bits and its text."""

    def __init__(self, reason: str, *, status: str, fail_info: frozenset[str] = frozenset(),
                 text: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.fail_info = fail_info
        self.text = text


def request(digest: bytes, nonce: int, *, policy: str | None = None) -> bytes:
    """The DER TimeStampReq (v1) for a SHA-256 ``digest``: its imprint, ``nonce``, certReq set (and the TSA
    policy asked for, when ``policy`` names one)."""
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"a SHA-256 digest has {DIGEST_SIZE} bytes, not {len(digest)}")
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }
    if policy is not None:
        fields["req_policy"] = policy
    return bytes(tsp.TimeStampReq(fields).dump())


def reply_token(reply_der: bytes, *, nonce: int) -> bytes:
    """The TimeStampToken's DER out of a TimeStampResp that grants it, for the request made with ``nonce``.

    :class:`TimestampRefused` when the status is neither granted nor grantedWithMods; :class:`TimestampInvalid`
    when the reply is not a TimeStampResp, or its token is not a signed TSTInfo echoing ``nonce``.
    """
    with _malformed("the reply is not a TimeStampResp"):
        # read by hand: asn1crypto's TimeStampResp lacks OPTIONAL on the token, which a refusal leaves out
        class_, _, tag, *_ = parser.parse(reply_der, strict=True)
        parts = _elements(reply_der)
        if (class_, tag) != (0, 16) or not 1 <= len(parts) <= 2:
            raise TimestampInvalid("the reply is not a TimeStampResp (SEQUENCE of a status and a token)")
        status_info = tsp.PKIStatusInfo.load(parts[0], strict=True)
        status = str(status_info["status"].native)
        fail = status_info["fail_info"].native
        texts = status_info["status_string"].native
    if status not in GRANTED:
        failures = frozenset(FAILURE_NAMES.get(str(name), str(name)) for name in (fail or ()))
        text = "; ".join(str(t) for t in texts)[:_STATUS_TEXT_LIMIT] if texts else None
        words = STATUS_NAMES.get(status, status)
        reason = f"the time-stamping authority refused: {words}"
        if failures:
            reason += f" ({', '.join(sorted(failures))})"
        if text:
            reason += f": {text}"
        raise TimestampRefused(reason, status=words, fail_info=failures, text=text)
    if len(parts) != 2:
        raise TimestampInvalid(f"the reply is {STATUS_NAMES[status]} but carries no token")
    token_der = parts[1]  # as the authority encoded it: re-encoding could change what was signed
    if _parse(token_der).info["nonce"].native != nonce:
        raise TimestampInvalid("the token's nonce is not the request's")
    return token_der


def verify_token(token_der: bytes, digest: bytes, certificates_pem: Sequence[str], *,
                 nonce: int | None = None) -> datetime:
    """Check a TimeStampToken over the SHA-256 ``digest`` and return its genTime (UTC).

    It must be a CMS SignedData of one signer over a TSTInfo whose imprint is SHA-256 of exactly ``digest``
    (and whose nonce is ``nonce``, when given), whose signed attributes' message digest is the TSTInfo's, and
    whose signature verifies under the one of ``certificates_pem`` its SignerInfo names, a certificate with the
    critical extended key usage timeStamping that is valid at genTime. :class:`TimestampInvalid` otherwise.
    """
    if len(digest) != DIGEST_SIZE:
        raise TimestampInvalid(f"a SHA-256 digest has {DIGEST_SIZE} bytes, not {len(digest)}")
    token = _parse(token_der)
    with _malformed("not a time-stamp token"):
        return _verify(token, digest, certificates_pem, nonce)


def _verify(token: _Token, digest: bytes, certificates_pem: Sequence[str], nonce: int | None) -> datetime:
    imprint = token.info["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].native != "sha256":
        raise TimestampInvalid(f"the imprint's hash is {imprint['hash_algorithm']['algorithm'].native}, not sha256")
    if imprint["hashed_message"].native != digest:
        raise TimestampInvalid("the token is over another digest")
    if nonce is not None and token.info["nonce"].native != nonce:
        raise TimestampInvalid("the token's nonce is not the request's")
    when = token.info["gen_time"].native
    if not isinstance(when, datetime):  # asn1crypto's extended_datetime: year 0
        raise TimestampInvalid("the token's genTime is not a time")
    gen_time = when.astimezone(UTC)
    _check_signed_attributes(token)
    certificate = _signer_certificate(token.signer["sid"], certificates_pem)
    _check_certificate(certificate, gen_time)
    _check_signature(token, certificate)
    return gen_time


@dataclass(frozen=True)
class _Token:
    info: tsp.TSTInfo
    info_der: bytes
    signer: cms.SignerInfo
    signed_attrs_der: bytes  # as encoded in the token, [0] IMPLICIT


@contextmanager
def _malformed(what: str) -> Iterator[None]:
    """asn1crypto's errors on malformed DER (raised where a field is first read) as :class:`TimestampInvalid`."""
    try:
        yield
    except TimestampInvalid:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise TimestampInvalid(f"{what} ({type(exc).__name__}: {exc})") from exc


def _elements(der: bytes) -> list[bytes]:
    """The encodings of a constructed value's elements, byte for byte as they are in ``der``."""
    contents = parser.parse(der, strict=True)[4]
    found = []
    while contents:
        size = parser.peek(contents)
        found.append(contents[:size])
        contents = contents[size:]
    return found


def _parse(token_der: bytes) -> _Token:
    """The token's parts, each read from the token's own bytes (asn1crypto re-encodes what it has decoded, and
    the signature and the message digest are over the bytes as they were)."""
    with _malformed("not a time-stamp token"):
        content = cms.ContentInfo.load(token_der, strict=True)
        if content["content_type"].native != "signed_data":
            raise TimestampInvalid(f"the token is {content['content_type'].native}, not CMS SignedData")
        signed = content["content"]
        encapsulated = signed["encap_content_info"]
        if encapsulated["content_type"].native != "tst_info":
            raise TimestampInvalid(f"the token encapsulates {encapsulated['content_type'].native}, not a TSTInfo")
        if isinstance(encapsulated["content"], core.Void):
            raise TimestampInvalid("the token encapsulates no TSTInfo (a detached signature)")
        info_der = bytes(encapsulated["content"])
        info = tsp.TSTInfo.load(info_der, strict=True)
        info.native  # noqa: B018 - parse every field now
        signers = signed["signer_infos"]
        if len(signers) != 1:
            raise TimestampInvalid(f"the token has {len(signers)} signers, not one")
        # ContentInfo → [0] SignedData → signerInfos (its last element) → the SignerInfo → [0] signedAttrs
        signer_der = _elements(_elements(_elements(_elements(token_der)[1])[0])[-1])[0]
        fields = _elements(signer_der)
        signed_attrs_der = fields[3] if len(fields) > 3 and fields[3][:1] == b"\xa0" else b""
        signer = signers[0]
    if info["version"].native != "v1":
        raise TimestampInvalid(f"the TSTInfo's version is {info['version'].native}, not v1")
    return _Token(info, info_der, signer, signed_attrs_der)


def _hash_name(algorithm: str) -> type[hashes.HashAlgorithm]:
    try:
        return _HASHES[algorithm]
    except KeyError:
        raise TimestampInvalid(f"unsupported digest algorithm {algorithm}") from None


def _check_signed_attributes(token: _Token) -> None:
    """The signed attributes name a TSTInfo and carry its digest; an ESS signing certificate, when present, is
    checked with the certificate in :func:`_check_signature`."""
    attributes = token.signer["signed_attrs"]
    if not token.signed_attrs_der or not attributes:
        raise TimestampInvalid("the SignerInfo has no signed attributes")
    values: dict[str, list[Any]] = {}
    for attribute in attributes:
        values.setdefault(str(attribute["type"].native), []).extend(attribute["values"])
    content_types = values.get("content_type", [])
    if len(content_types) != 1 or content_types[0].native != "tst_info":
        raise TimestampInvalid("the signed attributes' content type is not id-ct-TSTInfo")
    digests = values.get("message_digest", [])
    if len(digests) != 1:
        raise TimestampInvalid("the signed attributes have no single message digest")
    name = str(token.signer["digest_algorithm"]["algorithm"].native)
    _hash_name(name)
    computed = hashlib.new(name, token.info_der).digest()
    if digests[0].native != computed:
        raise TimestampInvalid("the signed attributes' message digest is not the TSTInfo's (the token was altered)")


def _signer_certificate(sid: cms.SignerIdentifier, certificates_pem: Sequence[str]) -> x509.Certificate:
    """The trusted certificate the SignerInfo names."""
    if not certificates_pem:
        raise TimestampInvalid("no trusted time-stamping certificate is configured")
    for pem in certificates_pem:
        try:
            certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
        except ValueError as exc:
            raise TimestampInvalid(f"a trusted certificate is not PEM ({exc})") from exc
        for certificate in certificates:
            if _names(sid, certificate):
                return certificate
    raise TimestampInvalid("the token is not signed by a trusted time-stamping authority's certificate")


def _names(sid: cms.SignerIdentifier, certificate: x509.Certificate) -> bool:
    """Whether the SignerInfo's identifier is ``certificate``'s (issuer and serial number, or key identifier)."""
    parsed = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    if sid.name == "issuer_and_serial_number":
        named = sid.chosen
        return bool(named["issuer"] == parsed.issuer and named["serial_number"].native == parsed.serial_number)
    return parsed.key_identifier is not None and sid.chosen.native == parsed.key_identifier


def _check_certificate(certificate: x509.Certificate, gen_time: datetime) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampInvalid("the signer's certificate has no extended key usage (timeStamping)") from None
    if ExtendedKeyUsageOID.TIME_STAMPING not in usage.value:
        raise TimestampInvalid("the signer's certificate is not for time-stamping (extended key usage)")
    if not usage.critical:
        raise TimestampInvalid("the signer's certificate's extended key usage timeStamping is not critical")
    if not certificate.not_valid_before_utc <= gen_time <= certificate.not_valid_after_utc:
        raise TimestampInvalid("the token's genTime is outside its signer's certificate's validity")


def _check_signature(token: _Token, certificate: x509.Certificate) -> None:
    signer = token.signer
    signed_bytes = b"\x31" + token.signed_attrs_der[1:]  # signed as a SET OF, not as [0] IMPLICIT
    signature = bytes(signer["signature"].native)
    algorithm = signer["signature_algorithm"]
    try:
        kind = str(algorithm.signature_algo)
    except ValueError:
        raise TimestampInvalid(f"unsupported signature algorithm {algorithm['algorithm'].native}") from None
    key = certificate.public_key()
    try:
        if kind == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise TimestampInvalid("an Ed25519 signature from a certificate without an Ed25519 key")
            key.verify(signature, signed_bytes)
        elif kind == "rsassa_pkcs1v15":
            if not isinstance(key, rsa.RSAPublicKey):
                raise TimestampInvalid("an RSA signature from a certificate without an RSA key")
            key.verify(signature, signed_bytes, padding.PKCS1v15(), _signature_hash(token))
        elif kind == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
                raise TimestampInvalid("an ECDSA signature from a certificate without a P-256 or P-384 key")
            key.verify(signature, signed_bytes, ec.ECDSA(_signature_hash(token)))
        else:
            raise TimestampInvalid(f"unsupported signature algorithm {algorithm['algorithm'].native}")
    except InvalidSignature:
        raise TimestampInvalid("the token's signature does not verify under its signer's certificate") from None
    _check_signing_certificate(token, certificate)


def _signature_hash(token: _Token) -> hashes.HashAlgorithm:
    """The hash the signature algorithm names (``sha256WithRSAEncryption``), else the SignerInfo's digest
    algorithm (plain ``rsaEncryption``)."""
    try:
        name = token.signer["signature_algorithm"].hash_algo
    except ValueError:
        name = token.signer["digest_algorithm"]["algorithm"].native
    return _hash_name(str(name))()


def _check_signing_certificate(token: _Token, certificate: x509.Certificate) -> None:
    """An ESS signing-certificate attribute (v1 or v2), when the token has one, names this certificate."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    for attribute in token.signer["signed_attrs"]:
        kind = attribute["type"].native
        if kind not in ("signing_certificate", "signing_certificate_v2"):
            continue
        for value in attribute["values"]:
            first = value["certs"][0]
            name = "sha1" if kind == "signing_certificate" else str(first["hash_algorithm"]["algorithm"].native)
            if name not in ("sha1", *_HASHES):
                raise TimestampInvalid(f"unsupported digest algorithm {name} in the signing certificate")
            if first["cert_hash"].native != hashlib.new(name, der).digest():
                raise TimestampInvalid("the token's signing-certificate attribute names another certificate")

