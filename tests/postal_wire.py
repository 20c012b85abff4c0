"""What the post's tests share: the simulator's account, raw calls over HTTP as the NGSP SDK makes them (an order
written out as MOrder spells it, so a test reads as the wire looks), and today's old dialect for the refusals."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from fastapi import FastAPI

from sandbox.postal import create_app
from schemas.postal import CANCEL_PATH, FIRST_ID, ORDER_PATH, TOKEN_PATH, TRACKING_PATH, TrackingPage

KEY, SECRET = "motcua-halong", "consumer-secret-thu-nghiem"
CUSTOMER, OTHER_CUSTOMER = "HCC-HALONG", "HCC-UONGBI"
SERVED = (1, 22, 79)
TOKEN, ORDERS, CANCEL, TRACKING = TOKEN_PATH, ORDER_PATH, CANCEL_PATH, TRACKING_PATH
CITIZEN, PHONE = "Nguyễn Thị Hương Giang", "0912 345 678"
DOSSIER = "000.21.00.H49-240315-0001"
NUMBER = f"{DOSSIER}-KQ"
DELIVERED_PATH = [1, 2, 3, 8, 4]


def postal_app(**overrides: Any) -> FastAPI:
    settings: dict[str, Any] = {
        "consumer_key": KEY, "consumer_secret": SECRET, "customer_codes": {CUSTOMER, OTHER_CUSTOMER},
        "step_seconds": 0, "province_codes": SERVED, "seed": 7,
    }
    return create_app(**(settings | overrides))


def basic(key: str = KEY, secret: str = SECRET) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def ask_token(client: httpx.Client, key: str = KEY, secret: str = SECRET) -> httpx.Response:
    """The token request as the SDK's IToken makes it (V1)."""
    return client.post(TOKEN, content=b"grant_type=client_credentials",
                       headers={"Authorization": basic(key, secret),
                                "Content-Type": "application/x-www-form-urlencoded"})


def token(client: httpx.Client) -> str:
    response = ask_token(client)
    assert response.status_code == 200, response.text
    answer = response.json()
    return f"{answer['token_type']} {answer['access_token']}"


def auth(authorization: str) -> dict[str, str]:
    return {"Authorization": authorization}


def order(number: str = NUMBER, **overrides: Any) -> dict[str, Any]:
    """A delivery order as MOrder writes it: every field, null where empty (V3)."""
    base = {
        "CustomerCode": CUSTOMER, "OrderNumber": number, "CODAmount": 50000.0,
        "SenderProvince": 22, "SenderDistrict": None, "SenderAddress": "Số 1 Đường 25/4, phường Hồng Gai, Quảng Ninh",
        "SenderName": "UBND phường Hồng Gai", "SenderEmail": None, "SenderTel": "02033825678", "SenderDesc": None,
        "Description": "Chuyển phát kết quả giải quyết TTHC", "ReceiverName": CITIZEN,
        "ReceiverAddress": "Tổ 5, khu 3, phường Bãi Cháy, Quảng Ninh", "ReceiverTel": PHONE,
        "ReceiverProvince": 22, "ReceiverDistrict": None, "ReceiverEmail": None,
    }
    return {**base, **overrides}


def old_order(number: str = NUMBER) -> dict[str, Any]:
    """The order as the relay sent it before the NGSP contract (camelCase, string provinces, purpose, weight)."""
    return {"customerCode": CUSTOMER, "orderNumber": number, "purpose": "delivery", "serviceCode": "HCC",
            "senderName": "UBND", "senderAddress": "Số 1", "senderProvinceCode": "22", "senderDistrictCode": "193",
            "senderTel": "02033825678", "receiverName": CITIZEN, "receiverAddress": "Tổ 5",
            "receiverProvinceCode": "22", "receiverDistrictCode": "193", "receiverTel": PHONE, "codAmount": 50000,
            "description": "Kết quả", "weight": 200}


def create(client: httpx.Client, authorization: str, body: Any) -> dict[str, Any]:
    response = client.post(ORDERS, json=body, headers=auth(authorization))
    assert response.status_code == 200, response.text  # MResult comes with HTTP 200 (V6)
    return dict(response.json())


def cancel(client: httpx.Client, authorization: str, number: str, customer: str = CUSTOMER) -> dict[str, Any]:
    response = client.get(CANCEL, params={"CustomerCode": customer, "OrderNumber": number},
                          headers=auth(authorization))
    assert response.status_code == 200, response.text
    return dict(response.json())


def tracking(client: httpx.Client, authorization: str, last_id: str = FIRST_ID, size: int = 50) -> TrackingPage:
    response = client.get(TRACKING, params={"pagesize": size, "lastId": last_id}, headers=auth(authorization))
    assert response.status_code == 200, response.text
    return TrackingPage.model_validate(response.json())


def advance(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/_admin/advance", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def admin_order(client: httpx.Client, number: str = NUMBER) -> dict[str, Any]:
    response = client.get(f"/_admin/orders/{number}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def codes(history: list[dict[str, Any]]) -> list[int]:
    return [r["StatusCode"] for r in history]


def stats(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/_admin/stats").json())
