"""Where a payment destination's reconciliation reads a day's settled payments — an assumption of ours.

The national payment platform publishes no settlement list (docs/contracts.md, "no public counterpart"), so the
reconciliation depends on none: its source is this module's, chosen by the destination's options, and either
source can be replaced by a province's real one without touching the platform's connector.

- :class:`SettlementEndpoint` (option ``settlement_url``, default ``<url>/dvcqg/settlement_list``): ``POST``
  :class:`~schemas.payment.SettlementRequest` ``{client_id, date: "yyyyMMdd", check_sum}``, the check_sum
  HMAC-SHA256 with hash_key_1 over ``client_id|date``; answered :class:`~schemas.payment.SettlementAnswer`
  ``{error: "0", msg, data: [...]}``, refusals in the platform's codes (``connectors/payment.py``'s table).
- :class:`SettlementFiles` (option ``settlement_dir``): the list as a file the bank sends,
  ``<settlement_dir>/<yyyyMMdd>.csv``, UTF-8 (a BOM allowed), a header row naming at least ``transaction_id``,
  ``trans_amount`` and ``payment_time`` (``transaction_code`` when it has one; other columns are ignored). A
  day whose file has not come yet is retried; a file that is not that shape is refused, naming the line.

Both assume: one row per settled payment, ``transaction_id`` the transaction id we registered (the bill's
code), ``trans_amount`` whole đồng, ``payment_time`` ``yyyyMMddHHmmss`` in Vietnam time, and only the day
asked for (rows of other days are left out, so a file covering more does no harm).
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Protocol

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import Permanent, Retryable, excerpt, post_json
from connectors.payment import classify_answer
from schemas.payment import SettledItem, SettlementAnswer, SettlementRequest, settlement_checksum

REQUIRED_COLUMNS = ("transaction_id", "trans_amount", "payment_time")


class SettlementSource(Protocol):
    """A day's settled payments of one destination, whatever they come from."""

    def settled(self, day: date) -> list[SettledItem]:
        """The payments settled on ``day`` (Vietnam time)."""
        ...

    def close(self) -> None:
        """Release what the source holds."""
        ...


def _of_day(items: list[SettledItem], day: date) -> list[SettledItem]:
    text = day.strftime("%Y%m%d")
    return [item for item in items if item.payment_time.startswith(text)]


class SettlementEndpoint:
    """The settlement list asked of an endpoint with the partner's client id and hash_key_1."""

    def __init__(self, *, url: str, client_id: str, request_key: SecretStr, client: httpx.Client) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"settlement list URL must be http(s): {url!r}")
        self.url, self.client_id = url, client_id
        self._key = request_key
        self._client = client

    def settled(self, day: date) -> list[SettledItem]:
        """The payments the endpoint lists as settled on ``day``."""
        text = day.strftime("%Y%m%d")
        request = SettlementRequest(client_id=self.client_id, date=text,
                                    check_sum=settlement_checksum(self._key.get_secret_value(), self.client_id, text))
        payload, response = post_json(self._client, self.url, "settlement list", json=request.model_dump(mode="json"))
        status = response.status_code
        try:
            answer = SettlementAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable("settlement list: the answer is not the documented shape", status_code=status,
                            excerpt=excerpt(str(payload))) from exc
        error = classify_answer("settlement list", answer.error, answer.msg, status, answer.model_dump_json())
        if error is not None:
            raise error
        return _of_day(answer.data, day)

    def close(self) -> None:
        self._client.close()


class SettlementFiles:
    """The settlement list as the CSV file a bank sends for each day, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, day: date) -> Path:
        return self.directory / f"{day:%Y%m%d}.csv"

    def settled(self, day: date) -> list[SettledItem]:
        """The rows of ``day``'s file; retried while the file has not come."""
        path = self.path(day)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise Retryable(f"settlement list: no file for {day.isoformat()} yet ({path})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise Permanent(f"settlement list: {path} cannot be read: {exc}") from exc
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise Permanent(f"settlement list: {path} has no column {', '.join(missing)}")
        items: list[SettledItem] = []
        for number, row in enumerate(reader, start=2):
            try:
                items.append(SettledItem.model_validate(
                    {k: (row.get(k) or "").strip() for k in (*REQUIRED_COLUMNS, "transaction_code")}))
            except ValidationError as exc:
                fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors()}))
                raise Permanent(f"settlement list: {path} line {number}: {fields} not as expected") from exc
        return _of_day(items, day)

    def close(self) -> None:
        """Nothing to release."""
