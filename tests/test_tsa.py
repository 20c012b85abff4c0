"""RFC 3161 time-stamps, both sides: the client and the checks of ``schemas.timestamps`` against the
time-stamping authority's simulator, served by a real uvicorn on loopback and spoken to over HTTP."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asn1crypto import cms, tsp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from connectors.tsa import TimestampClient, TimestampUnavailable
from sandbox.tsa import (
    POLICY,
    QUERY_TYPE,
    REPLY_TYPE,
    Authority,
    KeyType,
    SignerId,
    TsaState,
    create_app,
    self_signed,
)
from schemas.timestamps import TimestampInvalid, TimestampRefused, reply_token, request, verify_token
from tests.servers import run_asgi

DIGEST = hashlib.sha256(b'{"checkpoint":1,"format":"motcua-audit/1"}').digest()
OTHER = hashlib.sha256(b'{"checkpoint":2,"format":"motcua-audit/1"}').digest()
NONCE = 0x1234_5678_9ABC_DEF0


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.generate("rsa")


@pytest.fixture(scope="module")
def base_url(authority: Authority) -> Iterator[str]:
    with run_asgi(create_app(authority=authority)) as url:
        yield url


@pytest.fixture()
def admin(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=5.0) as c:
        c.post("/_admin/reset").raise_for_status()
        yield c


@pytest.fixture(scope="module")
def pem(base_url: str) -> str:
    return httpx.get(f"{base_url}/certificate", timeout=5.0).text


def ask(admin: httpx.Client, body: bytes, content_type: str = QUERY_TYPE) -> httpx.Response:
    return admin.post("/", content=body, headers={"Content-Type": content_type})


def stamped(admin: httpx.Client, digest: bytes = DIGEST, nonce: int = NONCE) -> bytes:
    response = ask(admin, request(digest, nonce))
    assert response.status_code == 200 and response.headers["content-type"] == REPLY_TYPE
    return reply_token(response.content, nonce=nonce)


def tst_info(token: bytes) -> tsp.TSTInfo:
    return cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed


def faults(admin: httpx.Client, **config: Any) -> None:
    admin.post("/_admin/faults", json=config).raise_for_status()


def test_a_stamp_verifies_and_its_gen_time_is_now(base_url: str, admin: httpx.Client, pem: str) -> None:
    # given
    client = TimestampClient(f"{base_url}/", timeout=5.0, certificates_pem=[pem])
    # when
    with client:
        token = client.stamp(DIGEST)
    # then
    gen_time = verify_token(token, DIGEST, [pem])
    assert gen_time.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - gen_time).total_seconds()) < 5
    assert admin.get("/_admin/stats").json() == {"tokens": 1, "refused": {}, "faults": {"http": 0, "rejected": 0}}


def test_the_token_is_the_authoritys(admin: httpx.Client, authority: Authority, pem: str) -> None:
    # when
    first, second = stamped(admin), stamped(admin, OTHER, NONCE + 1)
    # then
    assert pem == authority.certificate_pem
    info = tst_info(first)
    assert info["policy"].native == POLICY and info["nonce"].native == NONCE
    assert info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert info["accuracy"].native == {"seconds": None, "millis": 100, "micros": None}
    assert info["tsa"].chosen.native == {"country_name": "VN", "organization_name": "motcua-relay sandbox",
                                         "common_name": "motcua-relay sandbox TSA"}
    assert tst_info(second)["serial_number"].native == info["serial_number"].native + 1
    embedded = cms.ContentInfo.load(first)["content"]["certificates"]
    assert [c.chosen.dump() for c in embedded] == [authority.certificate.public_bytes(Encoding.DER)]


def test_a_token_checked_against_another_digest_fails(admin: httpx.Client, pem: str) -> None:
    token = stamped(admin)
    with pytest.raises(TimestampInvalid, match="another digest"):
        verify_token(token, OTHER, [pem])


def test_a_token_from_an_untrusted_authority_fails(admin: httpx.Client) -> None:
    # given: the token embeds the certificate that signed it, which is not among the trusted ones
    token = stamped(admin)
    stranger = Authority.generate("ecdsa").certificate_pem
    # then
    with pytest.raises(TimestampInvalid, match="not signed by a trusted"):
        verify_token(token, DIGEST, [stranger])
    with pytest.raises(TimestampInvalid, match="no trusted"):
        verify_token(token, DIGEST, [])


def _tamper_gen_time(token: bytes) -> bytes:
    encoded = tst_info(token)["gen_time"].dump()  # 0x18, length, "YYYYMMDDhhmmss[.f]Z"
    at = token.index(encoded) + 2
    return token[:at] + (b"3" if token[at:at + 1] != b"3" else b"4") + token[at + 1:]


def _tamper_signature(token: bytes) -> bytes:
    signature = cms.ContentInfo.load(token)["content"]["signer_infos"][0]["signature"].native
    at = token.index(signature) + len(signature) - 1
    return token[:at] + bytes([token[at] ^ 0x01]) + token[at + 1:]


@pytest.mark.parametrize(("tamper", "reason"), [
    (_tamper_gen_time, "message digest is not the TSTInfo's"),
    (_tamper_signature, "signature does not verify"),
    (lambda token: token[:-1], "not a time-stamp token"),
    (lambda token: b"\x30\x03\x02\x01\x01", "not a time-stamp token"),
], ids=["gen-time", "signature", "truncated", "another-structure"])
def test_a_tampered_token_fails(admin: httpx.Client, pem: str, tamper: Any, reason: str) -> None:
    token = stamped(admin)
    verify_token(token, DIGEST, [pem])
    with pytest.raises(TimestampInvalid, match=reason):
        verify_token(tamper(token), DIGEST, [pem])


def test_a_nonce_mismatch_fails(admin: httpx.Client, pem: str) -> None:
    response = ask(admin, request(DIGEST, NONCE))
    with pytest.raises(TimestampInvalid, match="nonce"):
        reply_token(response.content, nonce=NONCE + 1)
    token = reply_token(response.content, nonce=NONCE)
    assert verify_token(token, DIGEST, [pem], nonce=NONCE)
    with pytest.raises(TimestampInvalid, match="nonce"):
        verify_token(token, DIGEST, [pem], nonce=NONCE + 1)


def _query(algorithm: str = "sha256", imprint: bytes = DIGEST, **fields: Any) -> bytes:
    return bytes(tsp.TimeStampReq({
        "version": "v1", "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": imprint},
        "nonce": NONCE, "cert_req": True, **fields,
    }).dump())


@pytest.mark.parametrize(("body", "failure"), [
    (_query("sha1", hashlib.sha1(b"body").digest()), "badAlg"),  # noqa: S324 - refusing SHA-1 is the point
    (_query("md5", hashlib.md5(b"body").digest()), "badAlg"),  # noqa: S324
    (b"not a time-stamp request", "badRequest"),
    (_query()[:-3], "badRequest"),
    (_query("sha256", DIGEST[:20]), "badDataFormat"),
    (_query("sha512", DIGEST), "badDataFormat"),
    (request(DIGEST, NONCE, policy="1.2.3.4.5"), "unacceptedPolicy"),
], ids=["sha1", "md5", "garbage", "truncated", "short-imprint", "sha512-of-32-bytes", "other-policy"])
def test_the_authority_refuses_what_it_cannot_stamp(admin: httpx.Client, body: bytes, failure: str) -> None:
    # when
    response = ask(admin, body)
    # then
    assert response.status_code == 200 and response.headers["content-type"] == REPLY_TYPE
    with pytest.raises(TimestampRefused) as refused:
        reply_token(response.content, nonce=NONCE)
    assert (refused.value.status, refused.value.fail_info) == ("rejection", frozenset({failure}))
    assert f"rejection ({failure})" in str(refused.value)
    assert admin.get("/_admin/stats").json()["tokens"] == 0


def test_the_authority_stamps_the_other_sha2_hashes_and_its_own_policy(admin: httpx.Client) -> None:
    for algorithm, size in (("sha384", 48), ("sha512", 64)):
        response = ask(admin, _query(algorithm, bytes(size), req_policy=POLICY))
        assert tst_info(reply_token(response.content, nonce=NONCE))["policy"].native == POLICY


def test_another_content_type_is_answered_415(admin: httpx.Client) -> None:
    for content_type in ("application/octet-stream", "application/json", ""):
        assert ask(admin, request(DIGEST, NONCE), content_type).status_code == 415
    assert ask(admin, request(DIGEST, NONCE), f"{QUERY_TYPE}; charset=binary").status_code == 200


def test_the_client_raises_refused_on_a_rejection_then_stamps_again(base_url: str, admin: httpx.Client) -> None:
    # given
    faults(admin, reject_next=1)
    client = TimestampClient(f"{base_url}/", timeout=5.0)
    # when
    with pytest.raises(TimestampRefused) as refused:
        client.stamp(DIGEST)
    # then
    assert refused.value.fail_info == frozenset({"systemFailure"}) and "127.0.0.1" in refused.value.reason
    assert client.stamp(DIGEST)
    assert admin.get("/_admin/stats").json()["faults"] == {"http": 0, "rejected": 1}


def test_the_client_raises_unavailable_on_a_503_and_keeps_the_urls_secrets(base_url: str,
                                                                         admin: httpx.Client) -> None:
    # given: credentials in the URL's user part and query
    faults(admin, fail_next=2)
    url = base_url.replace("http://", "http://relay:s3cret-pass@") + "/?api_key=s3cret-key"
    client = TimestampClient(url, timeout=5.0)
    # when
    for _ in range(2):
        with pytest.raises(TimestampUnavailable) as unavailable:
            client.stamp(DIGEST)
        # then
        assert unavailable.value.status_code == 503 and unavailable.value.reason == "TSA 127.0.0.1: HTTP 503"
    assert "s3cret" not in repr(unavailable.value)
    assert client.stamp(DIGEST)


def test_the_client_raises_unavailable_on_a_timeout_and_no_connection(base_url: str, admin: httpx.Client) -> None:
    faults(admin, latency_ms=300)
    with pytest.raises(TimestampUnavailable, match="timeout"):
        TimestampClient(f"{base_url}/", timeout=0.05).stamp(DIGEST)
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(TimestampUnavailable, match="no answer"):
            TimestampClient(f"http://127.0.0.1:{port}/", timeout=1.0).stamp(DIGEST)


def test_the_client_raises_unavailable_on_an_answer_that_is_not_a_reply() -> None:
    page = httpx.MockTransport(lambda _: httpx.Response(200, text="<html>gateway</html>",
                                                        headers={"Content-Type": "text/html"}))
    with httpx.Client(transport=page) as http, pytest.raises(TimestampUnavailable, match="text/html"):
        TimestampClient("http://tsa.example.vn/", client=http).stamp(DIGEST)
    garbage = httpx.MockTransport(lambda _: httpx.Response(200, content=b"\x30\x00",
                                                           headers={"Content-Type": REPLY_TYPE}))
    with httpx.Client(transport=garbage) as http, pytest.raises(TimestampInvalid, match="not a TimeStampResp"):
        TimestampClient("http://tsa.example.vn/", client=http).stamp(DIGEST)


def test_the_client_with_certificates_refuses_a_token_it_does_not_trust(base_url: str, admin: httpx.Client) -> None:
    stranger = Authority.generate("ecdsa").certificate_pem
    with pytest.raises(TimestampInvalid, match="not signed by a trusted"):
        TimestampClient(f"{base_url}/", certificates_pem=[stranger]).stamp(DIGEST)


@pytest.mark.parametrize(("key_type", "signer_id"), [
    ("ecdsa", "issuer_serial"), ("ecdsa", "key_id"), ("ed25519", "issuer_serial"), ("ed25519", "key_id"),
    ("rsa", "key_id"),
])
def test_tokens_of_every_key_type_verify(key_type: KeyType, signer_id: SignerId) -> None:
    # given
    authority = Authority.generate(key_type, signer_id=signer_id)
    state = TsaState(authority)
    # when
    token = reply_token(state.answer(request(DIGEST, NONCE)), nonce=NONCE)
    # then
    assert verify_token(token, DIGEST, [authority.certificate_pem], nonce=NONCE)
    with pytest.raises(TimestampInvalid, match="not signed by a trusted"):
        verify_token(token, DIGEST, [Authority.generate("ecdsa", signer_id=signer_id).certificate_pem])
    with pytest.raises(TimestampInvalid, match="message digest"):
        verify_token(_tamper_gen_time(token), DIGEST, [authority.certificate_pem])


@pytest.mark.parametrize(("critical", "purposes", "reason"), [
    (False, (ExtendedKeyUsageOID.TIME_STAMPING,), "is not critical"),
    (True, (ExtendedKeyUsageOID.CLIENT_AUTH,), "not for time-stamping"),
])
def test_a_certificate_not_for_time_stamping_is_refused(critical: bool, purposes: Any, reason: str) -> None:
    # given: a key whose certificate does not make it a time-stamping authority's
    key = ec.generate_private_key(ec.SECP256R1())
    authority = Authority(key, self_signed(key, "not a TSA", eku_critical=critical, purposes=purposes))
    token = reply_token(TsaState(authority).answer(request(DIGEST, NONCE)), nonce=NONCE)
    # then
    with pytest.raises(TimestampInvalid, match=reason):
        verify_token(token, DIGEST, [authority.certificate_pem])


def test_a_token_after_its_certificate_expired_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    authority = Authority(key, self_signed(key, "expired TSA", valid_days=-1))  # ended at the start of today
    token = reply_token(TsaState(authority).answer(request(DIGEST, NONCE)), nonce=NONCE)
    with pytest.raises(TimestampInvalid, match="outside"):
        verify_token(token, DIGEST, [authority.certificate_pem])


def test_a_request_is_a_sha256_imprint_with_the_nonce_and_cert_req() -> None:
    query = tsp.TimeStampReq.load(request(DIGEST, NONCE))
    assert query.native == {
        "version": "v1", "message_imprint": {"hash_algorithm": {"algorithm": "sha256", "parameters": None},
                                             "hashed_message": DIGEST},
        "req_policy": None, "nonce": NONCE, "cert_req": True, "extensions": None,
    }
    with pytest.raises(ValueError, match="32 bytes"):
        request(DIGEST[:31], NONCE)

