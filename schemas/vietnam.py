"""Vietnam's clock and money, defined once for every layer.

Every service the relay talks to keeps Vietnam time (UTC+7, no daylight saving since 1975) and
counts in đồng, with no minor unit. The wire formats of each service stay in its own module; what is
here is only what they all share: the zone, the calendar day on that clock, the years a time may be in,
and đồng as Vietnamese write it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

# The years a time the relay takes in may have, as it is written (in whatever zone): its conversion to UTC, to
# Vietnam time or to a service's format then stays inside Python's calendar (years 1–9999), and every service
# is sent a four-digit year it can read. No dossier, payment or parcel has a time outside.
FIRST_YEAR, LAST_YEAR = 1900, 2999
LAST_EPOCH_MS = int(datetime(LAST_YEAR + 1, 1, 1, tzinfo=VN_TZ).timestamp()) * 1000 - 1
"""The last millisecond of :data:`LAST_YEAR` in Vietnam time, since the Unix epoch: the bound of the services that
count time so."""


def in_years(moment: datetime) -> bool:
    """Whether ``moment``'s year as written is between :data:`FIRST_YEAR` and :data:`LAST_YEAR`."""
    return FIRST_YEAR <= moment.year <= LAST_YEAR


def vn_today() -> date:
    """Today's date in Vietnam (at 01:00 there it is still yesterday in UTC)."""
    return datetime.now(VN_TZ).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The Vietnam calendar day as a UTC interval [start, end)."""
    start = datetime.combine(day, time.min, VN_TZ).astimezone(UTC)
    return start, start + timedelta(days=1)


def vnd(amount: int | None, unit: str = " đ") -> str:
    """An amount of đồng as Vietnamese write it (``1.250.000 đ``); "—" for none."""
    return "—" if amount is None else f"{amount:,}".replace(",", ".") + unit
