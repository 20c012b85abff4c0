"""Every word the console shows, in Vietnamese and in English: one catalogue, the templates hold none.

:data:`LABELS` maps a key to its two texts (Vietnamese first; ``{name}`` fields filled by :meth:`Words.__call__`).
Keys with a dot name what the ledger or a service stores and the console translates:

- ``status.<s>``: a delivery's status (``store.tables.Status``);
- ``outcome.<o>``: an attempt's outcome (``delivered``, and each ``DeliveryError``'s in ``connectors/base.py``);
- ``reason.<r>``: the kind of reason a dead letter gave up for, read from the words the engine writes in
  ``last_error`` (``tasks/retry.py``, ``store/deliveries.py``, ``store/sweep.py``): :data:`REASONS`;
- ``match.<o>``: a reconciliation line's outcome (``adapters.payment.OUTCOMES``, whose Vietnamese it repeats);
- ``kind.<k>``: the title of a destination whose routing table gives none, by its service's kind.

What a service answered (an error's detail, an excerpt, a code) is shown as it came: the console marks it
``raw``. A reconciliation's note is stored in English by ``adapters/payment.py``: :data:`NOTES` reads its few
shapes back into Vietnamese (a note of another shape is shown as stored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from markupsafe import Markup

from schemas.vietnam import vnd

Lang = Literal["vi", "en"]
LANGS: tuple[Lang, ...] = ("vi", "en")

LABELS: dict[str, tuple[str, str]] = {
    # pages and navigation
    "overview": ("Tổng quan", "Overview"),
    "deadletters": ("Gửi thất bại", "Dead letters"),
    "reports": ("Báo cáo", "Reports"),
    "dossier": ("Hồ sơ", "Dossier"),
    "search": ("Tra cứu mã hồ sơ", "Find a dossier code"),
    "logout": ("Đăng xuất", "Log out"),
    "other_language": ("English", "Tiếng Việt"),
    # logging in, and the pages that say why not
    "login": ("Đăng nhập", "Log in"),
    "username": ("Tài khoản", "Account"),
    "password": ("Mật khẩu", "Password"),
    "bad_login": ("Sai tài khoản hoặc mật khẩu", "Wrong account or password"),
    "locked": ("Tạm khóa đăng nhập vì sai quá nhiều lần. Thử lại sau {minutes} phút.",
               "Log-in locked after too many failures. Try again in {minutes} min."),
    "unavailable": ("Không đọc được trạng thái phiên làm việc (Redis không trả lời): thử lại sau ít phút",
                    "The sessions' state cannot be read (Redis does not answer): try again in a few minutes"),
    "closed": ("Bảng điều khiển chưa được cấu hình: đặt MOTCUA_CONSOLE_SECRET và MOTCUA_CONSOLE_OPERATORS",
               "The console is not configured: set MOTCUA_CONSOLE_SECRET and MOTCUA_CONSOLE_OPERATORS"),
    "invalid": ("Yêu cầu không hợp lệ", "Invalid request"),
    "invalid_fields": ("Không đọc được giá trị của: {fields} (sai định dạng, quá dài hoặc có ký tự lạ).",
                       "These values cannot be read: {fields} (wrong format, too long or a stray character)."),
    "stale_form": ("Biểu mẫu đã hết hạn hoặc không hợp lệ: tải lại trang rồi thử lại.",
                   "The form has expired or is not valid: reload the page and try again."),
    "back": ("Về trang tổng quan", "Back to the overview"),
    # the fields a 400 page may name (a parameter's label where it is not the parameter's own name)
    "dossier_code": ("Mã hồ sơ", "Dossier code"),
    "ids": ("Lượt gửi đã chọn", "Chosen deliveries"),
    "one": ("Lượt gửi được bấm", "The delivery clicked"),
    "scope": ("Phạm vi gửi lại", "Replay scope"),
    "until": ("Thời điểm xác nhận", "Time of the confirmation"),
    "form_token": ("Mã biểu mẫu", "Form token"),
    "next": ("Trang cần mở", "Page to open"),
    "form": ("Nội dung biểu mẫu", "The form"),
    # the overview
    "destination": ("Đích nhận", "Destination"),
    "last_hour": ("1 giờ qua", "Last hour"),
    "last_day": ("24 giờ qua", "Last 24 hours"),
    "delivered": ("Đã gửi", "Delivered"),
    "retrying": ("Đang thử lại", "Retrying"),
    "dead": ("Thất bại", "Dead"),
    "open": ("Đang chờ", "Open"),
    "lag": ("Độ trễ (trung vị, 1 giờ)", "Lag (median, 1 h)"),
    "oldest": ("Chờ lâu nhất", "Oldest"),
    "breaker": ("Ngắt mạch", "Breaker"),
    "breaker_open": ("Đang ngắt", "Open"),
    "breaker_closed": ("Bình thường", "Closed"),
    "chart": ("Gửi thành công và lần gửi lỗi theo giờ (24 giờ)", "Delivered and failed attempts per hour (24 h)"),
    "chart_bar": ("{hour} giờ: {count} {what}", "{hour}h: {count} {what}"),
    "hour_mark": ("{hour}h", "{hour}h"),
    "failed_attempts": ("Lần gửi lỗi", "Failed attempts"),
    "workers": ("Tiến trình xử lý", "Workers"),
    "workers_up": ("{count} tiến trình đang chạy", "{count} answering"),
    "workers_down": ("Không tiến trình nào trả lời: không có gì đang được gửi",
                     "No worker answers: nothing is being delivered"),
    "workers_unknown": ("Không rõ: hàng đợi (broker) không trả lời trong {seconds} giây",
                        "Unknown: the broker does not answer within {seconds} s"),
    "asked_at": ("hỏi lúc {time}", "asked at {time}"),
    "last_attempt": ("Lần gửi gần nhất", "Last delivery attempt"),
    "last_delivered": ("Gửi thành công gần nhất", "Last delivered"),
    "ago": ("{age} trước", "{age} ago"),
    "never": ("Chưa có", "None yet"),
    # dead letters
    "filter": ("Lọc", "Filter"),
    "reason": ("Lý do", "Reason"),
    "last_answer": ("Phản hồi cuối", "Last answer"),
    "when": ("Thời điểm", "When"),
    "attempts": ("Số lần", "Attempts"),
    "event": ("Sự kiện", "Event"),
    "tick": ("Chọn lượt gửi #{id}", "Tick delivery #{id}"),
    "replay": ("Gửi lại", "Replay"),
    "replay_selected": ("Gửi lại các lượt đã chọn", "Replay the ticked ones"),
    "replay_matching": ("Gửi lại tất cả kết quả lọc", "Replay all that match"),
    "replayed": ("Đã đưa lại vào hàng đợi: {count}", "Queued again: {count}"),
    "replayed.one": ("Đã đưa lại vào hàng đợi lượt gửi đã bấm: {count}", "Queued again, the one clicked: {count}"),
    "replayed.selected": ("Đã đưa lại vào hàng đợi các lượt đã chọn: {count}",
                          "Queued again, the ticked ones: {count}"),
    "replayed.matching": ("Đã đưa lại vào hàng đợi tất cả kết quả lọc: {count}",
                          "Queued again, all that matched: {count}"),
    "none_ticked": ("Chưa chọn lượt gửi nào: đánh dấu các dòng cần gửi lại trước.",
                    "Nothing is ticked: tick the rows to replay first."),
    "confirm": ("Xác nhận gửi lại", "Confirm the replay"),
    "confirm.one": ("Gửi lại lượt gửi đã bấm ({count} lượt)?", "Replay the delivery clicked ({count})?"),
    "confirm.selected": ("Gửi lại {count} lượt gửi đã chọn?", "Replay the {count} ticked deliveries?"),
    "confirm.matching": ("Gửi lại tất cả {count} lượt gửi thất bại khớp bộ lọc?",
                         "Replay all {count} dead letters that match the filters?"),
    "confirm_yes": ("Gửi lại {count} lượt", "Replay {count}"),
    "confirm_filters": ("Bộ lọc", "Filters"),
    "confirm_all": ("không lọc: mọi lượt gửi thất bại", "none: every dead letter"),
    "confirm_more": ("… và {count} lượt khác", "… and {count} more"),
    "confirm_nothing": ("Không còn lượt gửi thất bại nào như vậy để gửi lại.",
                        "No such dead letter is left to replay."),
    "cancel": ("Hủy", "Cancel"),
    "none": ("Không có", "None"),
    "more": ("Trang sau", "Next page"),
    # a dossier
    "not_found": ("Không có hồ sơ nào mang mã này.", "No dossier has this code."),
    "timeline": ("Diễn biến", "Timeline"),
    "applicant": ("Công dân", "Applicant"),
    "reveal": ("Hiện thông tin cá nhân (được ghi nhật ký)", "Reveal personal data (logged)"),
    "row_kind": ("Loại", "Kind"),
    "row.event": ("Sự kiện", "Event"),
    "row.attempt": ("Lần gửi", "Attempt"),
    "attempt_no": ("Lần {number}", "#{number}"),
    "origin": ("Nguồn", "Origin"),
    "what": ("Nội dung", "What"),
    "status": ("Trạng thái", "Status"),
    "deliveries": ("Lượt gửi", "Deliveries"),
    "delivered_at": ("Gửi thành công lúc", "Delivered at"),
    "reference": ("Mã tham chiếu", "Reference"),
    "sequence_no": ("Số thứ tự", "Sequence"),
    # reports
    "reconciliation": ("Đối soát thanh toán", "Payment reconciliation"),
    "portal_sync": ("Đồng bộ Cổng DVC quốc gia", "National portal sync"),
    "day": ("Ngày", "Day"),
    "outcome": ("Kết quả", "Outcome"),
    "bill": ("Mã hóa đơn", "Bill"),
    "amount": ("Số tiền hóa đơn", "Bill amount"),
    "settled": ("Số tiền quyết toán", "Settled amount"),
    "note": ("Ghi chú", "Note"),
    "unit": ("Đơn vị", "Unit"),
    "dossiers": ("Số hồ sơ", "Dossiers"),
    "synced": ("Đã đồng bộ", "Synced"),
    "pending": ("Đang chờ", "Pending"),
    "failed": ("Lỗi", "Failed"),
    "total": ("Tổng cộng", "Total"),
    # units of time
    "seconds": ("{n} giây", "{n} s"),
    "minutes": ("{n} phút", "{n} min"),
    "hours": ("{n} giờ", "{n} h"),
    # a delivery's status
    "status.pending": ("Chờ gửi", "Pending"),
    "status.in_flight": ("Đang gửi", "In flight"),
    "status.delivered": ("Đã gửi", "Delivered"),
    "status.retrying": ("Đang thử lại", "Retrying"),
    "status.superseded": ("Bị thay thế (đã gửi bản mới hơn)", "Superseded"),
    "status.dead": ("Thất bại", "Dead"),
    # an attempt's outcome
    "outcome.delivered": ("Thành công", "Delivered"),
    "outcome.retryable": ("Lỗi tạm thời", "Retryable error"),
    "outcome.permanent": ("Bị từ chối", "Rejected"),
    "outcome.auth_expired": ("Hết hạn đăng nhập", "Authentication expired"),
    "outcome.rerouted": ("Chuyển sang kênh khác", "Rerouted"),
    "outcome.paused": ("Tạm dừng", "Paused"),
    "outcome.lost": ("Mất tiến trình xử lý giữa chừng", "Worker lost"),
    "outcome.error": ("Lỗi", "Error"),
    "outcome.none": ("Đang gửi", "In flight"),
    # why a delivery gave up (REASONS)
    "reason.rejected": ("Bị từ chối", "Rejected"),
    "reason.gave_up": ("Hết số lần thử ({n} lần)", "Gave up after {n} attempts"),
    "reason.deadline": ("Quá hạn gửi (sau {n} lần)", "Deadline passed after {n} attempts"),
    "reason.lost": ("Bỏ cuộc: {n} lần gửi không có kết quả (mất tiến trình xử lý mỗi lần)",
                    "Gave up: {n} attempts without an answer (worker lost each time)"),
    "reason.lease": ("Mất tiến trình xử lý giữa chừng (hết hạn giữ)", "Worker lost during the attempt"),
    "reason.superseded": ("Bị thay thế: đã gửi bản số {n}", "Superseded: sequence {n} already sent"),
    "reason.rerouted": ("Gửi qua {destination} thay thế", "Sent by {destination} instead"),
    "reason.paused": ("Tạm dừng", "Paused"),
    "reason.other": ("Khác", "Other"),
    # a reconciliation line's outcome (the Vietnamese is adapters.payment.OUTCOMES')
    "match.matched": ("Khớp (đã thanh toán, có thông báo)", "Matched (paid, callback received)"),
    "match.recovered": ("Đã thanh toán, không nhận được thông báo: đã bổ sung", "Paid, no callback came: recorded"),
    "match.not_settled": ("Có thông báo, chưa được quyết toán", "Callback received, not settled"),
    "match.amount_mismatch": ("Sai số tiền: tạm giữ, chưa ghi nhận", "Wrong amount: held, not recorded"),
    "match.unknown": ("Giao dịch không có hóa đơn", "A transaction with no bill"),
    "match.duplicate": ("Thanh toán trùng: cần hoàn tiền", "Paid twice: refund it"),
    # a destination's title when its table gives none, by kind (else its service's, else its name)
    "kind.webhook": ("Bên nhận webhook", "Webhook subscriber"),
    "kind.portal": ("Cổng Dịch vụ công quốc gia", "National public service portal"),
    "kind.zalo": ("Zalo OA (tin ZNS)", "Zalo Official Account (ZNS)"),
    "kind.sms": ("Tổng đài SMS thương hiệu", "Brandname SMS gateway"),
    "kind.postal": ("Bưu chính công ích (VNPost)", "VNPost public-administration post"),
    "kind.payment": ("Thu phí, lệ phí", "Fee collection"),
    "kind.transfer": ("Liên thông qua LGSP", "Inter-level transfer (LGSP)"),
}


class Reason(NamedTuple):
    """What the ledger stores, in words (``kind``), and what of it is shown as it came (``detail``: raw)."""

    kind: str
    detail: str


# What the engine writes in ``last_error`` when a delivery ends (``tasks/retry.py``: Decision reasons; ``store/
# deliveries.py`` and ``store/sweep.py``: a lost worker), as the key of its words and the part that is the detail.
REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"rejected: (?P<detail>.*)", re.S), "reason.rejected"),
    (re.compile(r"gave up after (?P<n>\d+) attempts: (?P<detail>.*)", re.S), "reason.gave_up"),
    (re.compile(r"deadline passed after (?P<n>\d+) attempts: (?P<detail>.*)", re.S), "reason.deadline"),
    (re.compile(r"gave up: (?P<n>\d+) attempts started without an answer \(worker lost each time\)"), "reason.lost"),
    (re.compile(r"worker lost during the attempt \(lease expired\)"), "reason.lease"),
    (re.compile(r"superseded: sequence (?P<n>\d+) already sent to \S+"), "reason.superseded"),
    (re.compile(r"(?P<detail>.*); sent by (?P<destination>\S+) instead", re.S), "reason.rerouted"),
    (re.compile(r"paused: (?P<detail>.*)", re.S), "reason.paused"),
)

# The notes of reconciliation lines (``adapters/payment.py``, ``reconcile`` and ``RECOVERED_NOTES``), in Vietnamese.
NOTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?P<n>\d+) callback\(s\)"), "{n} lần thông báo"),
    (re.compile(r"paid, no callback came: found by the query of unanswered bills"),
     "đã thanh toán, không nhận được thông báo: tìm thấy khi tra cứu các hóa đơn chưa có thông báo"),
    (re.compile(r"paid, no callback came: recorded as paid by the reconciliation"),
     "đã thanh toán, không nhận được thông báo: ghi nhận đã thanh toán khi đối soát"),
    (re.compile(r"no bill was issued with this code"), "không có hóa đơn nào mang mã này"),
    (re.compile(r"no bill was issued with this code; (?P<n>\d+) callback\(s\) received"),
     "không có hóa đơn nào mang mã này; đã nhận {n} lần thông báo"),
    (re.compile(r"paid again after (?P<tx>.+): refund it"), "thanh toán lần nữa sau giao dịch {tx}: cần hoàn tiền"),
    (re.compile(r"paid (?P<paid>.+) for a bill of (?P<bill>.+): held, not marked paid"),
     "đã trả {paid} cho hóa đơn {bill}: tạm giữ, chưa ghi nhận đã thanh toán"),
    (re.compile(r"reported paid (?P<amount>.+), not in the provider's settlement list"),
     "thông báo đã trả {amount}, không có trong danh sách quyết toán của bên thu"),
    (re.compile(r"a callback for a bill never issued; reported paid (?P<amount>.+), not in the provider's "
                r"settlement list"),
     "thông báo cho một hóa đơn chưa từng phát hành; đã trả {amount}, không có trong danh sách quyết toán của bên thu"),
)


def language(wanted: str | None) -> Lang:
    return "en" if wanted == "en" else "vi"


@dataclass(frozen=True)
class Words:
    """The catalogue in one language: ``words("key", name=value)``, and what the ledger stores, in words."""

    lang: Lang

    def __call__(self, key: str, **fields: Any) -> str:
        texts = LABELS.get(key)
        if texts is None:
            return key
        text = texts[LANGS.index(self.lang)]
        return text.format(**fields) if fields else text

    def status(self, status: str | None) -> str:
        return self(f"status.{status}") if f"status.{status}" in LABELS else str(status)

    def outcome(self, outcome: str | None) -> str:
        key = f"outcome.{outcome or 'none'}"
        return self(key) if key in LABELS else str(outcome)

    def match(self, outcome: str) -> str:
        return self(f"match.{outcome}") if f"match.{outcome}" in LABELS else outcome

    def reason(self, last_error: str | None) -> Reason:
        """The kind of reason a dead letter gave up for, and its detail (the whole text when its kind is not
        one the engine writes)."""
        text = last_error or ""
        for pattern, key in REASONS:
            found = pattern.fullmatch(text)
            if found:
                fields = found.groupdict()
                return Reason(self(key, **{k: v for k, v in fields.items() if k != "detail"}),
                              fields.get("detail") or "")
        return Reason(self("reason.other"), text)

    def note(self, note: str | None) -> Reason:
        """A reconciliation line's note in this language (``kind``), or as it is stored (``detail``: in English
        by ``adapters/payment.py``, or a shape :data:`NOTES` does not know)."""
        text = note or ""
        if self.lang == "vi":
            for pattern, vietnamese in NOTES:
                found = pattern.fullmatch(text)
                if found:
                    return Reason(vietnamese.format(**found.groupdict()), "")
        return Reason("", text)

    def number(self, value: float, digits: int) -> str:
        shown = f"{value:.{digits}f}"
        return shown.replace(".", ",") if self.lang == "vi" else shown

    def age(self, seconds: float | None) -> str:
        """A duration as people say it (``12,5 giây``, ``4 phút``, ``1,5 giờ``); "—" for none."""
        if not seconds:
            return "—"
        if seconds < 10:
            return self("seconds", n=self.number(seconds, 1))
        if seconds < 90:
            return self("seconds", n=self.number(seconds, 0))
        if seconds < 5400:
            return self("minutes", n=self.number(seconds / 60, 0))
        return self("hours", n=self.number(seconds / 3600, 1))

    def money(self, amount: int | None) -> str:
        """An amount of đồng: ``1.250.000 đ`` in Vietnamese, ``1,250,000 VND`` in English."""
        if self.lang == "vi" or amount is None:
            return vnd(amount)
        return f"{amount:,} VND"

    def kind_title(self, kind: str) -> str | None:
        return self(f"kind.{kind}") if f"kind.{kind}" in LABELS else None


def destination_markup(name: str, title: str) -> Markup:
    """A destination as the console shows it: its title, its name (the routing file's id) small beside it."""
    if title == name:
        return Markup('<span class="dest">{}</span>').format(name)
    return Markup('<span class="dest" title="{}">{}</span> <small class="id raw">{}</small>').format(name, title, name)
