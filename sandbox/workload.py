"""Realistic traffic: a working day of a ward's reception desk and of the provincial centre, and a sender to the
relay's intake.

Government as it is since 1 July 2025 (two levels: province and commune). :func:`generate_day` plays a ward's
desk (the "Bộ phận một cửa" of UBND phường Hồng Gai, Quảng Ninh): civil status (foreign-element cases included,
Decree 120/2025/NĐ-CP), certification, residence, household businesses, and the dossiers it receives for the
province (land, construction), transferred to the department that decides them, whose result comes back to the
desk to be returned; a birth registered outside the applicant's ward goes to that ward, which takes it over.
:func:`centre_day` plays the provincial public-administration centre: enterprise registration, construction and
land for organisations, and naturalisation, which its department of justice sends on to the ministry.

Shape of a desk's day (docs/domain.md; the figures of the seeds are from before 2025 and stay the scale references: a
desk of about 400 dossiers a day, 82,934 of 97,630 a year involving the post, a provincial centre's 28,230
dossiers in 8 months): 4–10 events each; about 85 % involve the postal service (some collected from home before
they are received, most results returned by post); fees assessed and paid in cash at the desk or left to be
collected on delivery; a few supplements, refusals, withdrawals and transfers.

Time is compressed: a dossier's whole life is played within the day's working hours
(07:30–11:30, 13:30–17:00 Asia/Ho_Chi_Minh), while due dates are the real ones, counted in
working days from reception. Addresses have two levels (a ward and the province), whatever ``unit_code`` says.
Everything is drawn from one seeded :class:`random.Random`, so a seed gives the same day again.

Every generated event is passed through :func:`schemas.events.parse_event` and
:func:`schemas.events.event_json`, so it is exactly what the intake accepts.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, Field

from schemas.events import event_json, parse_event
from schemas.vietnam import VN_TZ, vn_today
from schemas.webhook import sign

# Office hours with the lunch break; a "working second" is an offset into them.
MORNING = (timedelta(hours=7, minutes=30), timedelta(hours=11, minutes=30))
AFTERNOON = (timedelta(hours=13, minutes=30), timedelta(hours=17))
_MORNING_S = int((MORNING[1] - MORNING[0]).total_seconds())
WORKING_SECONDS = _MORNING_S + int((AFTERNOON[1] - AFTERNOON[0]).total_seconds())
# Fixed-date public holidays (Tết and Hùng Kings' day follow the lunar calendar and are left out).
FIXED_HOLIDAYS = {(1, 1), (4, 30), (5, 1), (9, 2)}

PICKUP_SHARE = 0.05
RETURN_BY_POST_SHARE = 0.93
ONLINE_SHARE = 0.3
REFUSED_SHARE = 0.02
WITHDRAWN_SHARE = 0.01
SUPPLEMENT_SHARE = 0.08
FEE_PAID_AT_DESK_SHARE = 0.75
LATE_SHARE = 0.01
MAX_EVENTS = 10

# The units (config/units.csv): the ward whose desk the day plays, the ward next door, the provincial centre,
# the departments its dossiers go to, and the ministry.
WARD_DESK, NEIGHBOUR_WARD = "000.21.00.H49", "000.17.00.H49"  # UBND phường Hồng Gai, UBND phường Bãi Cháy
CENTRE = "000.00.01.H49"  # Trung tâm Phục vụ hành chính công tỉnh Quảng Ninh
AGRICULTURE_ENVIRONMENT, CONSTRUCTION_DEPT, JUSTICE_DEPT = "000.00.07.H49", "000.00.08.H49", "000.00.04.H49"
JUSTICE_MINISTRY = "000.00.00.G02"  # Bộ Tư pháp

DESK = "Bộ phận tiếp nhận và trả kết quả"
# A ward's People's Committee (Decree 150/2025/NĐ-CP): its office and its two divisions, and the ward police.
LEADERSHIP = ("Lãnh đạo UBND phường", "Phó Chủ tịch UBND phường")
JUSTICE = "Văn phòng HĐND và UBND phường"  # civil status and certification
LAND_OFFICE = "Chi nhánh Văn phòng Đăng ký đất đai"
# its economic division, by the officers' fields (each field is a lĩnh vực at the portal)
ENVIRONMENT = "Phòng Kinh tế, Hạ tầng và Đô thị (đất đai, môi trường)"
FINANCE = "Phòng Kinh tế, Hạ tầng và Đô thị (tài chính, kế hoạch)"
URBAN = "Phòng Kinh tế, Hạ tầng và Đô thị (xây dựng, đô thị)"
ECONOMY = "Phòng Kinh tế, Hạ tầng và Đô thị (công thương)"
POLICE = "Công an phường"
# The provincial centre's departments.
BUSINESS_OFFICE = "Phòng Đăng ký kinh doanh, Sở Tài chính"
BUILDING = "Sở Xây dựng"
LAND_AUTHORITY = "Văn phòng Đăng ký đất đai tỉnh"
JUSTICE_SERVICE = "Sở Tư pháp"
PROVINCE_LEADERSHIP = ("Lãnh đạo Sở", "Giám đốc Sở")


@dataclass(frozen=True)
class Procedure:
    """An administrative procedure as the desk sees it."""

    code: str
    name: str
    weight: int
    days: int
    route: tuple[tuple[str, str], ...]
    result: str
    documents: tuple[str, ...]
    fee: tuple[tuple[str, str, int], ...] = ()
    per_page_fee: bool = False
    business_share: float = 0.0
    transfer_to: str | None = None
    transfer_rate: float = 0.0
    transfer_reason: str = "Thủ tục liên thông, thuộc thẩm quyền quyết định của cấp tỉnh"
    # the unit a dossier is transferred to decides it and its result comes back to this desk, which returns it
    # (False: the other unit takes the dossier over, as a ward does a birth registered outside its residents)
    result_back: bool = True
    supplement_items: tuple[str, ...] = ("Bản sao giấy tờ tùy thân của người nộp hồ sơ",)


_CIVIL = ((JUSTICE, "Chuyên viên"), (JUSTICE, "Trưởng phòng"))
PROCEDURES: tuple[Procedure, ...] = (
    Procedure(
        "2.000815.000.00.00.H49", "Chứng thực bản sao từ bản chính giấy tờ, văn bản", 30, 0,
        ((JUSTICE, "Chuyên viên"),), "Bản sao chứng thực", ("Bản chính giấy tờ", "Bản sao cần chứng thực"),
        fee=(("PCT-BS", "Phí chứng thực bản sao", 2000),), per_page_fee=True,
    ),
    Procedure(
        "2.000884.000.00.00.H49", "Chứng thực chữ ký trong các giấy tờ, văn bản", 8, 0,
        ((JUSTICE, "Chuyên viên"),), "Giấy tờ, văn bản đã chứng thực chữ ký", ("Giấy tờ, văn bản cần chứng thực",),
        fee=(("PCT-CK", "Phí chứng thực chữ ký", 10000),), business_share=0.15,
    ),
    Procedure(
        "1.001193.000.00.00.H49", "Đăng ký khai sinh", 12, 1, _CIVIL, "Giấy khai sinh (bản chính)",
        ("Tờ khai đăng ký khai sinh", "Giấy chứng sinh"),
        supplement_items=("Giấy chứng sinh", "Bản sao Giấy chứng nhận kết hôn của cha mẹ"),
        transfer_to=NEIGHBOUR_WARD, transfer_rate=0.05, result_back=False,
        transfer_reason="Hồ sơ tiếp nhận ngoài nơi cư trú của người yêu cầu, chuyển UBND nơi cư trú giải quyết",
    ),
    Procedure(
        "1.000894.000.00.00.H49", "Đăng ký kết hôn", 6, 5, _CIVIL, "Giấy chứng nhận kết hôn",
        ("Tờ khai đăng ký kết hôn", "Giấy xác nhận tình trạng hôn nhân"),
        supplement_items=("Giấy xác nhận tình trạng hôn nhân",),
    ),
    Procedure(
        "1.000893.000.00.00.H49", "Đăng ký kết hôn có yếu tố nước ngoài", 1, 10, (*_CIVIL, LEADERSHIP),
        "Giấy chứng nhận kết hôn", ("Tờ khai đăng ký kết hôn", "Hộ chiếu của bên nước ngoài (bản sao)"),
        fee=(("LP-KHNN", "Lệ phí đăng ký kết hôn có yếu tố nước ngoài", 1000000),),  # the ward's since 07/2025
        supplement_items=("Giấy khám sức khỏe", "Bản dịch hộ chiếu có chứng thực"),
    ),
    Procedure(
        "1.000656.000.00.00.H49", "Đăng ký khai tử", 3, 1, _CIVIL, "Trích lục khai tử",
        ("Tờ khai đăng ký khai tử", "Giấy báo tử"),
    ),
    Procedure(
        "2.000635.000.00.00.H49", "Cấp bản sao trích lục hộ tịch", 6, 1, ((JUSTICE, "Chuyên viên"),),
        "Bản sao trích lục hộ tịch", ("Tờ khai cấp bản sao trích lục hộ tịch",),
        fee=(("PTL", "Phí cấp bản sao trích lục hộ tịch", 8000),),
    ),
    Procedure(
        "1.004873.000.00.00.H49", "Cấp Giấy xác nhận tình trạng hôn nhân", 5, 3, _CIVIL,
        "Giấy xác nhận tình trạng hôn nhân", ("Tờ khai cấp Giấy xác nhận tình trạng hôn nhân",),
    ),
    Procedure(
        "1.004194.000.00.00.H49", "Xác nhận thông tin về cư trú", 5, 1, ((POLICE, "Cán bộ tiếp nhận"),),
        "Giấy xác nhận thông tin về cư trú", ("Tờ khai thay đổi thông tin cư trú",),
    ),
    Procedure(
        "2.000720.000.00.00.H49", "Đăng ký thành lập hộ kinh doanh", 6, 3,
        ((FINANCE, "Chuyên viên"), (FINANCE, "Trưởng phòng")), "Giấy chứng nhận đăng ký hộ kinh doanh",
        ("Giấy đề nghị đăng ký hộ kinh doanh", "Bản sao biên bản họp thành viên hộ gia đình"),
        fee=(("LP-HKD", "Lệ phí đăng ký hộ kinh doanh", 100000),),
    ),
    Procedure(
        "1.004227.000.00.00.H49",
        "Đăng ký, cấp Giấy chứng nhận quyền sử dụng đất, quyền sở hữu nhà ở và tài sản khác gắn liền với đất lần đầu",
        6, 30, ((LAND_OFFICE, "Viên chức"), (ENVIRONMENT, "Chuyên viên"), (ENVIRONMENT, "Trưởng phòng"), LEADERSHIP),
        "Giấy chứng nhận quyền sử dụng đất", ("Đơn đăng ký đất đai", "Giấy tờ về quyền sử dụng đất", "Sơ đồ thửa đất"),
        fee=(
            ("LP-GCN", "Lệ phí cấp Giấy chứng nhận", 100000),
            ("PTD-GCN", "Phí thẩm định hồ sơ cấp Giấy chứng nhận", 500000),
        ),
        business_share=0.1, transfer_to=AGRICULTURE_ENVIRONMENT, transfer_rate=1.0,
        supplement_items=("Trích đo địa chính thửa đất", "Giấy tờ chứng minh nguồn gốc sử dụng đất"),
    ),
    Procedure(
        "1.003003.000.00.00.H49", "Đăng ký biến động quyền sử dụng đất do chuyển nhượng, tặng cho", 5, 10,
        ((LAND_OFFICE, "Viên chức"), (LAND_OFFICE, "Giám đốc chi nhánh")), "Giấy chứng nhận đã cập nhật biến động",
        ("Đơn đăng ký biến động", "Hợp đồng chuyển nhượng đã công chứng", "Giấy chứng nhận bản gốc"),
        fee=(("LP-BD", "Lệ phí chỉnh lý biến động", 50000), ("PTD-BD", "Phí thẩm định hồ sơ", 300000)),
    ),
    Procedure(
        "1.009994.000.00.00.H49", "Cấp giấy phép xây dựng nhà ở riêng lẻ", 4, 15,
        ((URBAN, "Chuyên viên"), (URBAN, "Trưởng phòng"), LEADERSHIP), "Giấy phép xây dựng",
        ("Đơn đề nghị cấp giấy phép xây dựng", "Bản vẽ thiết kế", "Giấy tờ về quyền sử dụng đất"),
        fee=(("LP-GPXD", "Lệ phí cấp giấy phép xây dựng", 75000),), business_share=0.2,
        transfer_to=CONSTRUCTION_DEPT, transfer_rate=1.0,
        supplement_items=("Bản vẽ mặt bằng móng", "Cam kết bảo đảm an toàn công trình liền kề"),
    ),
    Procedure(
        "2.000620", "Cấp Giấy phép bán lẻ sản phẩm rượu", 1, 10,
        ((ECONOMY, "Chuyên viên"), (ECONOMY, "Trưởng phòng")), "Giấy phép bán lẻ sản phẩm rượu",
        ("Đơn đề nghị cấp giấy phép", "Bản sao Giấy chứng nhận đăng ký kinh doanh"),
        fee=(("PTD-RUOU", "Phí thẩm định cấp giấy phép bán lẻ rượu", 1200000),), business_share=0.6,
    ),
)

# The provincial centre's procedures (the province's since 1 July 2025), handled by its departments.
CENTRE_PROCEDURES: tuple[Procedure, ...] = (
    Procedure(
        "2.001610.000.00.00.H49", "Đăng ký thành lập doanh nghiệp tư nhân", 20, 3,
        ((BUSINESS_OFFICE, "Chuyên viên"), (BUSINESS_OFFICE, "Trưởng phòng")),
        "Giấy chứng nhận đăng ký doanh nghiệp", ("Giấy đề nghị đăng ký doanh nghiệp", "Bản sao giấy tờ pháp lý"),
        business_share=1.0,
    ),
    Procedure(
        "1.009974.000.00.00.H49", "Cấp giấy phép xây dựng công trình", 6, 20,
        ((BUILDING, "Chuyên viên"), (BUILDING, "Trưởng phòng"), PROVINCE_LEADERSHIP), "Giấy phép xây dựng",
        ("Đơn đề nghị cấp giấy phép xây dựng", "Hồ sơ thiết kế xây dựng", "Giấy tờ về quyền sử dụng đất"),
        fee=(("LP-GPXD-CT", "Lệ phí cấp giấy phép xây dựng công trình", 150000),), business_share=0.9,
    ),
    Procedure(
        "1.004221.000.00.00.H49", "Đăng ký đất đai, cấp Giấy chứng nhận cho tổ chức", 4, 20,
        ((LAND_AUTHORITY, "Viên chức"), (LAND_AUTHORITY, "Giám đốc"), PROVINCE_LEADERSHIP),
        "Giấy chứng nhận quyền sử dụng đất", ("Đơn đăng ký đất đai", "Giấy tờ về quyền sử dụng đất"),
        fee=(("LP-GCN-TC", "Lệ phí cấp Giấy chứng nhận cho tổ chức", 500000),), business_share=1.0,
    ),
    Procedure(
        "2.000908.000.00.00.H49", "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam", 10, 10,
        ((JUSTICE_SERVICE, "Chuyên viên"), (JUSTICE_SERVICE, "Trưởng phòng")), "Phiếu lý lịch tư pháp",
        ("Tờ khai yêu cầu cấp Phiếu lý lịch tư pháp", "Bản chụp giấy tờ tùy thân"),
        fee=(("PLLTP", "Phí cung cấp thông tin lý lịch tư pháp", 200000),),
    ),
    Procedure(
        "1.001944.000.00.00.H49", "Nhập quốc tịch Việt Nam", 1, 115,
        ((JUSTICE_SERVICE, "Chuyên viên"), (JUSTICE_SERVICE, "Trưởng phòng"), PROVINCE_LEADERSHIP),
        "Quyết định cho nhập quốc tịch Việt Nam", ("Đơn xin nhập quốc tịch Việt Nam", "Bản khai lý lịch"),
        fee=(("LP-NQT", "Lệ phí nhập quốc tịch Việt Nam", 3000000),),
        transfer_to=JUSTICE_MINISTRY, transfer_rate=1.0,
        transfer_reason="Hồ sơ thuộc thẩm quyền trình Chủ tịch nước, chuyển Bộ Tư pháp",
    ),
)

FAMILY_NAMES = (
    ("Nguyễn", 38), ("Trần", 11), ("Lê", 9), ("Phạm", 7), ("Hoàng", 5), ("Vũ", 4), ("Phan", 4), ("Đặng", 3),
    ("Bùi", 3), ("Đỗ", 3), ("Hồ", 2), ("Ngô", 2), ("Dương", 2), ("Lý", 1), ("Đinh", 2), ("Trịnh", 1), ("Mai", 1),
)
MIDDLE_MALE = ("Văn", "Văn", "Đức", "Minh", "Quang", "Hữu", "Thanh", "Quốc", "Xuân", "Tiến", "Ngọc", "Công")
MIDDLE_FEMALE = ("Thị", "Thị", "Thị", "Thu", "Ngọc", "Thanh", "Minh", "Phương", "Hồng", "Bích", "Kim", "Hải")
GIVEN_MALE = (
    "Anh", "Bình", "Cường", "Dũng", "Đạt", "Hải", "Hùng", "Huy", "Khánh", "Long", "Nam", "Phong", "Quân",
    "Sơn", "Thắng", "Trung", "Tuấn", "Việt", "Hiếu", "Thành", "Toàn", "Kiên", "Lâm", "Đức",
)
GIVEN_FEMALE = (
    "Anh", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Ngọc", "Nhung",
    "Oanh", "Phương", "Quỳnh", "Thảo", "Thủy", "Trang", "Vân", "Yến", "Hằng", "Huyền", "Loan",
)
BUSINESS_NAMES = (
    "Công ty TNHH Xây dựng Thành Đạt", "Công ty Cổ phần Thương mại Hạ Long Xanh", "Công ty TNHH Du lịch Vịnh Ngọc",
    "Công ty TNHH Một thành viên Than Hòn Gai Dịch vụ", "Công ty Cổ phần Đầu tư Bãi Cháy",
    "Doanh nghiệp tư nhân Minh Phát", "Công ty TNHH Thực phẩm Cao Xanh", "Hợp tác xã Nông nghiệp Hà Khẩu",
)
# The wards of what was the city of Hạ Long, as they are since 1 July 2025 (Resolution 1679/NQ-UBTVQH15).
WARDS = (
    "Phường Hồng Gai", "Phường Bãi Cháy", "Phường Hà Tu", "Phường Hà Lầm", "Phường Cao Xanh", "Phường Việt Hưng",
    "Phường Tuần Châu", "Phường Hạ Long", "Phường Hoành Bồ",
)
STREETS = (
    "Lê Thánh Tông", "Nguyễn Văn Cừ", "Trần Hưng Đạo", "Cao Thắng", "Hạ Long", "Giếng Đồn", "Kênh Liêm", "Bến Đoan",
    "Lê Lợi", "Trần Quốc Nghiễn", "Nguyễn Văn Linh", "Vũ Văn Hiếu", "Anh Đào", "Hoàng Quốc Việt",
)
PROVINCE = "Tỉnh Quảng Ninh"
# Citizen ID province codes: mostly Quảng Ninh (022), some neighbours who moved here.
ID_PROVINCES = (("022", 80), ("001", 5), ("031", 4), ("030", 3), ("024", 3), ("034", 3), ("036", 2))
MOBILE_PREFIXES = (
    "091", "094", "088", "083", "084", "085", "096", "097", "098", "086", "032", "033", "034", "035", "036", "037",
    "038", "039", "090", "093", "089", "070", "076", "077", "078", "079", "056", "058", "081", "082",
)
REFUSAL_REASONS = (
    "Công dân không bổ sung hồ sơ theo yêu cầu trong thời hạn quy định",
    "Hồ sơ không thuộc thẩm quyền giải quyết của đơn vị",
    "Hồ sơ không đủ điều kiện giải quyết theo quy định",
)
WITHDRAWAL_REASONS = ("Công dân có đơn xin rút hồ sơ", "Công dân đề nghị dừng giải quyết để hoàn thiện giấy tờ")


def _weighted(rng: random.Random, items: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items])[0]


def _ascii_slug(text: str) -> str:
    stripped = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in stripped if c.isascii() and c.isalnum()).lower()


def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (weekends and fixed-date holidays skipped)."""
    current = start
    remaining = days
    while remaining > 0:
        current += timedelta(days=1)
        if current.weekday() < 5 and (current.month, current.day) not in FIXED_HOLIDAYS:
            remaining -= 1
    return current


def _clock(day: date, offset: int) -> datetime:
    base = datetime(day.year, day.month, day.day, tzinfo=VN_TZ)
    if offset < _MORNING_S:
        return base + MORNING[0] + timedelta(seconds=offset)
    return base + AFTERNOON[0] + timedelta(seconds=offset - _MORNING_S)


def worked_seconds(moment: datetime) -> int:
    """The working seconds of ``moment``'s day (Vietnam time) that have passed at ``moment``."""
    local = moment.astimezone(VN_TZ)
    since_midnight = local - datetime.combine(local.date(), datetime.min.time(), VN_TZ)
    passed = timedelta()
    for start, end in (MORNING, AFTERNOON):
        passed += min(max(since_midnight - start, timedelta()), end - start)
    return int(passed.total_seconds())


def _phone(rng: random.Random) -> str:
    prefix = rng.choice(MOBILE_PREFIXES)
    rest = f"{rng.randrange(10_000_000):07d}"
    national = prefix + rest
    style = rng.random()
    if style < 0.35:
        return f"{prefix}{rest[0]} {rest[1:4]} {rest[4:]}"
    if style < 0.55:
        return "+84" + national[1:]
    if style < 0.7:
        return f"{prefix}{rest[0]}.{rest[1:4]}.{rest[4:]}"
    return national


def _address(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.7:
        street = f"Số {rng.randint(1, 250)}, đường {rng.choice(STREETS)}"
    else:
        street = f"Tổ {rng.randint(1, 60)}, khu {rng.randint(1, 12)}"
    return {"street": street, "ward": rng.choice(WARDS), "province": PROVINCE}


def _citizen(rng: random.Random) -> dict[str, Any]:
    female = rng.random() < 0.5
    name = " ".join(
        (
            _weighted(rng, FAMILY_NAMES),
            rng.choice(MIDDLE_FEMALE if female else MIDDLE_MALE),
            rng.choice(GIVEN_FEMALE if female else GIVEN_MALE),
        )
    )
    born = rng.randint(1950, 2005)
    century_gender = (0 if born < 2000 else 2) + (1 if female else 0)
    id_number = f"{_weighted(rng, ID_PROVINCES)}{century_gender}{born % 100:02d}{rng.randrange(1_000_000):06d}"
    applicant: dict[str, Any] = {"kind": "citizen", "name": name, "id_number": id_number, "address": _address(rng)}
    if rng.random() < 0.96:
        applicant["phone"] = _phone(rng)
        applicant["zalo_consent"] = rng.random() < 0.85
    if rng.random() < 0.15:
        applicant["email"] = f"{_ascii_slug(name)}{rng.randint(1, 99)}@gmail.com"
    return applicant


def _business(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(BUSINESS_NAMES)
    return {
        "kind": "business",
        "name": name,
        "id_number": f"57{rng.randrange(100_000_000):08d}",
        "phone": f"0203 3{rng.randrange(100):02d} {rng.randrange(1000):03d}",
        "email": f"vanthu@{_ascii_slug(name.split(' ', 2)[-1])[:20]}.com.vn",
        "zalo_consent": False,
        "address": _address(rng),
    }


def _digest(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


@dataclass
class _Step:
    type: str
    gap: int
    data: Callable[[datetime], dict[str, Any]]


@dataclass
class _Dossier:
    """One dossier's plan: steps with the gaps before them, then laid out on the day's clock."""

    rng: random.Random
    day: date
    unit_code: str
    code: str
    procedure: Procedure
    applicant: dict[str, Any]
    span: int = WORKING_SECONDS  # the working seconds of the day its life is played in (scaled down to them)
    steps: list[_Step] = field(default_factory=list)

    def gap(self, low: int, high: int) -> int:
        # Same-day procedures move faster through the building than those with a long legal time limit.
        factor = 0.3 if self.procedure.days == 0 else 1.0
        return max(1, int(self.rng.randint(low, high) * factor))

    def add(self, type_: str, gap: int, data: Callable[[datetime], dict[str, Any]]) -> None:
        self.steps.append(_Step(type_, gap, data))

    def events(self, start: int) -> list[dict[str, Any]]:
        gaps = [s.gap for s in self.steps]
        gaps[0] = 0
        room = WORKING_SECONDS - 1 - start
        if sum(gaps) > room:
            scale = (room - len(gaps)) / sum(gaps)
            gaps = [0] + [max(1, int(g * scale)) for g in gaps[1:]]
        out = []
        offset, worked = start, -1
        for sequence, (step, gap) in enumerate(zip(self.steps, gaps, strict=True), start=1):
            offset += gap
            # a shorter span: the day's offsets scaled down to it, a second apart at least, within it
            worked = offset if self.span == WORKING_SECONDS else \
                max(worked + 1, offset * (self.span - MAX_EVENTS) // WORKING_SECONDS)
            at = _clock(self.day, worked)
            raw = {
                "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "type": step.type,
                "unit_code": self.unit_code,
                "dossier_code": self.code,
                "procedure_code": self.procedure.code,
                "sequence": sequence,
                "occurred_at": at.isoformat(),
                "applicant": self.applicant,
                "data": step.data(at),
            }
            out.append(event_json(parse_event(raw)))
        return out


def _plan(d: _Dossier, seq: int, officials: list[str]) -> None:
    """Lay out the lifecycle of one dossier as steps; at most MAX_EVENTS of them."""
    rng, proc = d.rng, d.procedure
    yymmdd = d.day.strftime("%y%m%d")
    pickup = rng.random() < PICKUP_SHARE
    online = not pickup and rng.random() < ONLINE_SHARE
    refused = online and rng.random() < REFUSED_SHARE / ONLINE_SHARE
    withdrawn = not refused and rng.random() < WITHDRAWN_SHARE
    transfer = not (refused or withdrawn) and proc.transfer_to is not None and rng.random() < proc.transfer_rate
    by_post = pickup or rng.random() < RETURN_BY_POST_SHARE
    # the post will not take an order without a phone to call: those citizens come to the desk
    # (decided after the draws, so a seed still gives the same day otherwise)
    reachable = bool(d.applicant.get("phone"))
    pickup, by_post = pickup and reachable, by_post and reachable
    supplement = refused or withdrawn or rng.random() < SUPPLEMENT_SHARE
    pages = rng.randint(1, 12) if proc.per_page_fee else 1
    fee_total = sum(amount for _, _, amount in proc.fee) * pages
    fee_paid = fee_total > 0 and rng.random() < FEE_PAID_AT_DESK_SHARE
    route = list(proc.route)

    def documents(names: Iterable[str]) -> list[dict[str, Any]]:
        return [{"name": n, "sha256": _digest(rng), "size": rng.randint(80_000, 4_000_000)} for n in names]

    if online or pickup:
        channel = "postal" if pickup else "online"
        d.add("dossier.submitted", 0, lambda at: {
            "channel": channel, "procedure_name": proc.name, "documents": documents(proc.documents),
        })
    if pickup:
        d.add("postal.pickup_requested", d.gap(600, 3600), lambda at: {
            "address": d.applicant["address"], "note": "Thu gom hồ sơ tại nhà công dân",
        })
    if refused:
        d.add("dossier.processing", d.gap(300, 3600), lambda at: _step(rng, DESK, "Chuyên viên", officials, at,
                                                                       "Kiểm tra hồ sơ nộp trực tuyến"))
        d.add("dossier.supplement_requested", d.gap(300, 1800), lambda at: _supplement(proc, at))
        d.add("dossier.refused", d.gap(1800, 7200), lambda at: {"reason": rng.choice(REFUSAL_REASONS)})
        return

    d.add("dossier.received", d.gap(3600, 10800) if pickup else d.gap(300, 5400), lambda at: {
        "receipt_no": f"TN-{yymmdd}-{seq:04d}",
        "due_at": _due(d.day, at, proc.days).isoformat(),
        "procedure_name": proc.name,
        "return_by_post": by_post,
    })
    fee_id = f"{d.code}-LP"
    if fee_total:
        lines = [{"code": c, "name": n, "amount": amount * pages} for c, n, amount in proc.fee]
        d.add("fee.assessed", d.gap(30, 180), lambda at: {"fee_id": fee_id, "amount": fee_total, "lines": lines})
        if fee_paid:
            receipt = f"BL-{yymmdd}-{seq:04d}"
            d.add("fee.paid", d.gap(30, 240), lambda at: {
                "fee_id": fee_id, "amount": fee_total, "provider": "cash", "transaction_id": receipt,
                "paid_at": at.isoformat(),
            })

    if withdrawn:
        department, title = route[0]
        d.add("dossier.processing", d.gap(900, 3600), lambda at: _step(rng, department, title, officials, at,
                                                                       "Tiếp nhận hồ sơ từ Bộ phận một cửa"))
        d.add("dossier.supplement_requested", d.gap(600, 3600), lambda at: _supplement(proc, at))
        d.add("dossier.withdrawn", d.gap(1800, 7200), lambda at: {"reason": rng.choice(WITHDRAWAL_REASONS)})
        return

    handed_over = transfer and not proc.result_back
    tail = (1 if transfer else 0) + (0 if handed_over else 2 + (1 if by_post else 0))
    if transfer and len(route) < 2:
        route.append(route[-1])
    budget = MAX_EVENTS - len(d.steps) - tail
    # A supplement costs two events: the request and the processing of what was brought back.
    if supplement and budget < 3:
        supplement = False
    keep = max(1, min(len(route), budget - (2 if supplement else 0)))
    if keep < len(route):
        route = [*route[: keep - 1], route[-1]] if keep > 1 else route[:1]
    def step_at(department: str, title: str, note: str) -> Callable[[datetime], dict[str, Any]]:
        return lambda at: _step(rng, department, title, officials, at, note)

    for index, (department, title) in enumerate(route):
        note = "Tiếp nhận hồ sơ từ Bộ phận một cửa" if index == 0 else "Thẩm định, trình ký hồ sơ"
        d.add("dossier.processing", d.gap(900, 3600) if index == 0 else d.gap(1800, 7200),
              step_at(department, title, note))
        if index == 0 and supplement:
            d.add("dossier.supplement_requested", d.gap(600, 3600), lambda at: _supplement(proc, at))
            d.add("dossier.processing", d.gap(3600, 10800), step_at(department, title, "Tiếp nhận hồ sơ bổ sung"))

    if transfer:
        target = proc.transfer_to or ""
        d.add("transfer.requested", d.gap(600, 3600), lambda at: {
            "target_unit": target, "reason": proc.transfer_reason,
            "documents": documents(proc.documents),
        })
        if handed_over:
            return

    pickup_method = "post" if by_post else ("online" if online and rng.random() < 0.3 else "desk")
    late = rng.random() < LATE_SHARE
    d.add("dossier.completed", d.gap(900, 3600), lambda at: {
        "result_documents": documents([proc.result]), "pickup": pickup_method, "late": late,
    })
    if by_post:
        cod = 0 if fee_paid else fee_total
        d.add("postal.delivery_requested", d.gap(300, 1800), lambda at: {
            "address": d.applicant["address"], "cod_amount": cod, "note": "Chuyển phát kết quả giải quyết TTHC",
        })
    d.add("dossier.returned", d.gap(300, 1800) if by_post else d.gap(1800, 7200), lambda at: {
        "returned_at": at.isoformat(), "method": pickup_method,
    })


def _step(
    rng: random.Random, department: str, title: str, officials: list[str], at: datetime, note: str
) -> dict[str, Any]:
    return {
        "step": {
            "department": department,
            "handler": rng.choice(officials),
            "title": title,
            "note": note,
            "started_at": at.isoformat(),
            "due_at": (at + timedelta(hours=rng.choice((4, 8, 16, 24)))).isoformat(),
        }
    }


def _supplement(proc: Procedure, at: datetime) -> dict[str, Any]:
    due = datetime.combine(add_working_days(at.date(), 5), at.timetz())
    return {
        "reason": "Hồ sơ chưa đầy đủ thành phần theo quy định",
        "items": list(proc.supplement_items),
        "due_at": due.isoformat(),
    }


def _due(day: date, received_at: datetime, days: int) -> datetime:
    if days == 0:
        same_day = datetime.combine(day, datetime.min.time(), VN_TZ) + AFTERNOON[1] - timedelta(minutes=30)
        if received_at < same_day:
            return same_day
        days = 1
    return datetime.combine(add_working_days(day, days), received_at.timetz())


def _start_offset(rng: random.Random) -> int:
    # Two thirds of citizens come in the morning; nobody starts a dossier in the last ten minutes.
    if rng.random() < 0.65:
        return rng.randrange(0, _MORNING_S)
    return rng.randrange(_MORNING_S, WORKING_SECONDS - 600)


def generate_day(
    dossiers: int = 400, *, day: date | None = None, unit_code: str = WARD_DESK, seed: int = 0
) -> list[dict[str, Any]]:
    """Every event a ward's desk emits in one working day, as canonical JSON dicts sorted by ``occurred_at``.

    ``day`` defaults to today in Vietnam; pass it for a result that depends on ``seed`` only.
    """
    return _day(PROCEDURES, dossiers, day, unit_code, seed)


def centre_day(
    dossiers: int = 100, *, day: date | None = None, unit_code: str = CENTRE, seed: int = 0
) -> list[dict[str, Any]]:
    """Every event the provincial public-administration centre's desk emits in one working day (its procedures
    are the province's: :data:`CENTRE_PROCEDURES`), sorted by ``occurred_at``."""
    return _day(CENTRE_PROCEDURES, dossiers, day, unit_code, seed)


def _day(procedures: tuple[Procedure, ...], dossiers: int, day: date | None, unit_code: str,
         seed: int, *, span: int = WORKING_SECONDS, first: int = 1) -> list[dict[str, Any]]:
    """The day's events; ``span``: played in its first working seconds only; ``first``: the first dossier's number
    (in its code and receipts). Neither changes what is drawn, only the times and numbers."""
    day = day or vn_today()
    rng = random.Random(seed)
    officials = [_citizen(rng)["name"] for _ in range(25)]
    weighted = tuple((p, p.weight) for p in procedures)
    events: list[dict[str, Any]] = []
    for number in range(first, first + dossiers):
        procedure: Procedure = _weighted(rng, weighted)
        applicant = _business(rng) if rng.random() < procedure.business_share else _citizen(rng)
        code = f"{unit_code}-{day:%y%m%d}-{number:04d}"
        dossier = _Dossier(rng, day, unit_code, code, procedure, applicant, span)
        _plan(dossier, number, officials)
        events.extend(dossier.events(_start_offset(rng)))
    events.sort(key=lambda e: (e["occurred_at"], e["dossier_code"], e["sequence"]))
    return events


def fee_day(bills: int, *, day: date | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``bills`` fees a desk's day assesses (``fee.assessed``, one dossier each, in time order), for
    the payment flow on its own; at most about 6,500 (a day has at most 9,999 dossiers)."""
    events = generate_day(min(9999, bills * 3 // 2 + 50), day=day, seed=seed)
    fees = [e for e in events if e["type"] == "fee.assessed"][:bills]
    if len(fees) < bills:
        raise ValueError(f"a day assesses {len(fees)} fees, not {bills}")
    return fees


SAMPLE_BLOCK = 10_000  # dossier numbers per seed: a day's sequence has four digits
SAMPLE_SEEDS = 1000  # seeds that differ by a multiple of this share their numbers (a code's number has 7 digits)
SAMPLE_MIN_SECONDS = 1200  # the desk's working time a sample of the day needs, or the day before is played


def sample(dossiers: int, seed: int, *, until: datetime | None = None) -> list[dict[str, Any]]:
    """The events of ``dossiers`` dossiers of the desk's day, none later than ``until`` (default now), for
    ``motcua-relay events sample``.

    The day is ``until``'s in Vietnam, played in its working time up to ``until`` (all of it once the desk has
    closed); while the desk has been open less than :data:`SAMPLE_MIN_SECONDS`, the day before. Dossier numbers
    are the seed's own (:data:`SAMPLE_BLOCK` numbers from ``seed % SAMPLE_SEEDS * SAMPLE_BLOCK + 1``: ``…-10001``
    for seed 1), so the samples of different seeds share no dossier in one relay; a seed gives the same dossiers,
    applicants and event ids whenever it is drawn, and the same events with the same ``until``.
    """
    if not 0 < dossiers < SAMPLE_BLOCK:
        raise ValueError(f"a sample has 1 to {SAMPLE_BLOCK - 1} dossiers, not {dossiers}")
    moment = (until or datetime.now(VN_TZ)).astimezone(VN_TZ)
    day, span = moment.date(), worked_seconds(moment)
    if span < SAMPLE_MIN_SECONDS:
        day, span = day - timedelta(days=1), WORKING_SECONDS
    return _day(PROCEDURES, dossiers, day, WARD_DESK, seed, span=span,
                first=seed % SAMPLE_SEEDS * SAMPLE_BLOCK + 1)


def shuffle_per_dossier(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The same events, each dossier's own events permuted among the positions they held."""
    rng = random.Random(seed)
    positions: dict[str, list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        positions[event["dossier_code"]].append(index)
    out: list[dict[str, Any]] = list(events)
    for slots in positions.values():
        moved = slots[:]
        rng.shuffle(moved)
        for target, source in zip(slots, moved, strict=True):
            out[target] = events[source]
    return out


@dataclass
class PostalDay:
    """A day's dossiers that involve the post, and those whose orders must end cancelled."""

    events: list[dict[str, Any]]
    withdrawn: set[str]  # dossier codes withdrawn after asking for the post: all their orders cancelled
    in_person: set[str]  # results fetched at the desk after a delivery order: that order cancelled


def postal_day(dossiers: int, *, day: date, seed: int, withdrawn: int = 10, in_person: int = 10) -> PostalDay:
    """The first ``dossiers`` dossiers of a day that involve the post; ``withdrawn`` of those with a delivery
    order are withdrawn right after asking for the post (what followed is dropped), and ``in_person`` more
    fetch their result at the desk instead. The day's own withdrawals count as withdrawn too."""
    everything = generate_day(int(dossiers * 1.3) + 20, day=day, seed=seed)
    chosen: dict[str, None] = {}
    for e in everything:
        if e["type"].startswith("postal."):
            chosen.setdefault(e["dossier_code"])
    keep = set(list(chosen)[:dossiers])
    events = [e for e in everything if e["dossier_code"] in keep]
    posted = sorted({e["dossier_code"] for e in events if e["type"] == "postal.delivery_requested"})
    withdraw, fetch = set(posted[:withdrawn]), set(posted[withdrawn:withdrawn + in_person])
    out: list[dict[str, Any]] = []
    cut: set[str] = set()
    for e in sorted(events, key=lambda e: (e["dossier_code"], e["sequence"])):
        code = e["dossier_code"]
        if code in cut:
            continue
        if e["type"] == "dossier.returned" and code in fetch:
            e = {**e, "data": {**e["data"], "method": "desk"}}
        out.append(e)
        if code in withdraw and e["type"] in ("postal.pickup_requested", "postal.delivery_requested"):
            cut.add(code)
            out.append(event_json(parse_event({
                **e, "event_id": str(uuid.uuid4()), "type": "dossier.withdrawn", "sequence": e["sequence"] + 1,
                "data": {"reason": "Công dân rút hồ sơ, không nhận kết quả qua bưu điện"}})))
    gone = {e["dossier_code"] for e in out if e["type"] == "dossier.withdrawn"}
    return PostalDay(sorted(out, key=lambda e: e["occurred_at"]), gone, fetch)


def workload_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts that let a person judge whether a generated day looks like a real desk's."""
    by_type = Counter(e["type"] for e in events)
    per_dossier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        per_dossier[e["dossier_code"]].append(e)
    dossiers = len(per_dossier)

    def share(predicate: Callable[[list[dict[str, Any]]], bool]) -> float:
        return round(sum(1 for evs in per_dossier.values() if predicate(evs)) / dossiers, 3) if dossiers else 0.0

    def has(evs: list[dict[str, Any]], prefix: str) -> bool:
        return any(e["type"].startswith(prefix) for e in evs)

    sizes = [len(evs) for evs in per_dossier.values()]
    applicants = [evs[0]["applicant"] for evs in per_dossier.values()]
    procedures = Counter(
        evs[0]["procedure_code"] for evs in per_dossier.values()
    )
    times = sorted(e["occurred_at"] for e in events)
    return {
        "events": len(events),
        "dossiers": dossiers,
        "events_per_dossier": {
            "min": min(sizes, default=0),
            "max": max(sizes, default=0),
            "mean": round(sum(sizes) / dossiers, 2) if dossiers else 0.0,
        },
        "by_type": dict(sorted(by_type.items())),
        "postal_share": share(lambda evs: has(evs, "postal.")),
        "pickup_by_post": by_type["postal.pickup_requested"],
        "returned_by_post": by_type["postal.delivery_requested"],
        "transfers": by_type["transfer.requested"],
        "supplements": by_type["dossier.supplement_requested"],
        "fees": {
            "assessed": by_type["fee.assessed"],
            "paid": by_type["fee.paid"],
            "unpaid": by_type["fee.assessed"] - by_type["fee.paid"],
        },
        "channels": dict(Counter(
            next((e["data"]["channel"] for e in evs if e["type"] == "dossier.submitted"), "desk")
            for evs in per_dossier.values()
        )),
        "procedures": dict(procedures.most_common()),
        "applicants": {
            "business": sum(1 for a in applicants if a.get("kind") == "business"),
            "with_phone": sum(1 for a in applicants if a.get("phone")),
            "zalo_consent": sum(1 for a in applicants if a.get("zalo_consent")),
        },
        "first_event_at": times[0] if times else None,
        "last_event_at": times[-1] if times else None,
    }


# ---- sending a day to the relay's intake ---------------------------------------------------------------------------

RETRYABLE_STATUSES = frozenset({408, 425, 429})
TRANSPORT_ERROR = "transport_error"


class SendReport(BaseModel):
    """What the intake answered for a stream of events."""

    events: int = 0
    batches: int = 0
    requests: int = 0
    retries: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = Field(0, description="events in batches answered with a non-retryable 4xx")
    failed: int = Field(0, description="events in batches still failing after the last retry")
    statuses: dict[str, int] = Field(default_factory=dict, description="answers by status code (or transport_error)")
    errors: list[str] = Field(default_factory=list, description="the first rejection and failure messages")
    elapsed_seconds: float = 0.0

    def note(self, status: str) -> None:
        """Count one answer."""
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def error(self, message: str) -> None:
        """Keep a short excerpt of the first few errors."""
        if len(self.errors) < 20:
            self.errors.append(message[:300])


def _retry_delay(attempt: int, backoff: float, retry_after: str | None) -> float:
    if retry_after is not None and retry_after.strip().isdigit():
        return min(float(retry_after), 30.0)
    return backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)


async def _send_batch(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    batch: list[dict[str, Any]],
    report: SendReport,
    max_attempts: int,
    backoff: float,
) -> None:
    body = json.dumps(batch, ensure_ascii=False, separators=(",", ":")).encode()
    for attempt in range(1, max_attempts + 1):
        headers = sign(secret, f"batch-{uuid.uuid4()}", body).as_headers()
        headers["content-type"] = "application/json"
        report.requests += 1
        retry_after = None
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            report.note(TRANSPORT_ERROR)
            problem = f"{type(exc).__name__}"
        else:
            status = response.status_code
            report.note(str(status))
            if 200 <= status < 300:
                _count_answer(report, response, len(batch))
                return
            problem = f"HTTP {status}: {response.text[:200]}"
            if status < 500 and status not in RETRYABLE_STATUSES:
                report.rejected += len(batch)
                report.error(problem)
                return
            retry_after = response.headers.get("retry-after")
        if attempt < max_attempts:
            report.retries += 1
            await asyncio.sleep(_retry_delay(attempt, backoff, retry_after))
    report.failed += len(batch)
    report.error(f"gave up after {max_attempts} attempts: {problem}")


def _count_answer(report: SendReport, response: httpx.Response, size: int) -> None:
    try:
        answer = response.json()
        report.accepted += len(answer.get("accepted", []))
        report.duplicates += len(answer.get("duplicates", []))
    except (ValueError, AttributeError):
        # An intake answering without the lists still took the batch: 200 means all were duplicates.
        if response.status_code == 200:
            report.duplicates += size
        else:
            report.accepted += size


async def send_events(
    intake_url: str,
    secret: str,
    events: list[dict[str, Any]],
    *,
    batch_size: int = 100,
    concurrency: int = 4,
    client: httpx.AsyncClient | None = None,
    max_attempts: int = 5,
    backoff: float = 0.2,
) -> SendReport:
    """Post ``events`` to the intake as signed JSON arrays of up to ``batch_size``, ``concurrency`` at a time.

    A batch is retried on transport errors, 408/425/429 and 5xx (honouring ``Retry-After``); the
    intake is idempotent by ``event_id``, so a batch that got through before answers duplicates.
    Other 4xx answers are recorded as rejected and not retried.
    """
    report = SendReport(events=len(events))
    batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
    report.batches = len(batches)
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(batch: list[dict[str, Any]]) -> None:
        async with semaphore:
            await _send_batch(http, intake_url, secret, batch, report, max_attempts, backoff)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(b) for b in batches))
    finally:
        if own_client:
            await http.aclose()
    report.elapsed_seconds = round(time.perf_counter() - started, 3)
    return report


def send_events_sync(
    intake_url: str,
    secret: str,
    events: list[dict[str, Any]],
    *,
    batch_size: int = 100,
    concurrency: int = 4,
    max_attempts: int = 5,
    backoff: float = 0.2,
) -> SendReport:
    """:func:`send_events` for callers without an event loop (the CLI, benchmarks)."""
    return asyncio.run(
        send_events(
            intake_url, secret, events,
            batch_size=batch_size, concurrency=concurrency, max_attempts=max_attempts, backoff=backoff,
        )
    )
