"""The shared Vietnam clock and đồng: what every report, note and template writes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from schemas.vietnam import VN_TZ, day_bounds, vn_today, vnd


@pytest.mark.parametrize(("amount", "unit", "text"), [
    (1_250_000, " đ", "1.250.000 đ"),
    (0, " đ", "0 đ"),
    (999, " đ", "999 đ"),
    (49_000, "", "49.000"),
    (None, " đ", "—"),
])
def test_vnd_writes_dong_with_dots_between_thousands(amount: int | None, unit: str, text: str) -> None:
    assert vnd(amount, unit) == text


def test_a_vietnam_day_starts_at_17_00_utc_the_day_before() -> None:
    start, end = day_bounds(date(2026, 11, 20))

    assert start == datetime(2026, 11, 19, 17, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    assert start.tzinfo is UTC


def test_today_is_the_date_on_the_vietnam_clock() -> None:
    before = datetime.now(VN_TZ).date()
    today = vn_today()
    after = datetime.now(VN_TZ).date()

    assert today in (before, after)
    assert VN_TZ.utcoffset(datetime(2026, 6, 1)) == timedelta(hours=7)  # no daylight saving
