"""The reconciliation report ("biên bản đối soát"): a CSV for machines and a spreadsheet an accountant signs.

Both are written next to each other as ``reconciliation-<destination>-<day>.csv`` and ``.xlsx``; a rerun
of the same day overwrites them, as it replaces the day's lines in the ledger. Amounts are whole đồng,
times Vietnam time. The spreadsheet has a title, a summary per outcome, the lines (anomalies first), and
a signature block, laid out to print on one A4 page width.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.payment import ANOMALIES, OUTCOMES, Reconciliation, ReconciliationLine
from schemas.vietnam import VN_TZ

if TYPE_CHECKING:
    from openpyxl import Workbook

CSV_COLUMNS = ("outcome", "bill_code", "transaction_id", "dossier_code", "bill_amount", "settled_amount",
               "callbacks", "paid_at", "note")
HEADERS = ("STT", "Kết quả", "Mã hóa đơn", "Mã giao dịch", "Mã hồ sơ", "Số tiền hóa đơn (đ)",
           "Số tiền quyết toán (đ)", "Số lần thông báo", "Thời điểm thanh toán", "Ghi chú")
WIDTHS = (6, 34, 26, 18, 22, 16, 16, 10, 19, 50)
MONEY = "#,##0"


def _local(at: datetime | None) -> str:
    return at.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S") if at else ""


def report_csv(lines: Sequence[ReconciliationLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow([line.outcome, line.bill_code, line.transaction_id or "", line.dossier_code or "",
                         "" if line.bill_amount is None else line.bill_amount,
                         "" if line.settled_amount is None else line.settled_amount, line.callbacks,
                         line.paid_at.astimezone(VN_TZ).isoformat() if line.paid_at else "", line.note])
    return out.getvalue()


def report_workbook(result: Reconciliation, provider: str, made_at: datetime) -> Workbook:
    # openpyxl here, not at the top: every process that loads the registry would pay for it (0.2 s), one a day uses it
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    thin = Side(style="thin", color="808080")
    box = Border(left=thin, right=thin, top=thin, bottom=thin)
    anomaly_fill = PatternFill("solid", fgColor="FCE4D6")
    header_fill = PatternFill("solid", fgColor="DDEBF7")
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = f"Doi soat {result.day:%d-%m-%Y}"
    sheet["A1"] = "BIÊN BẢN ĐỐI SOÁT THU PHÍ, LỆ PHÍ"
    sheet["A1"].font = Font(bold=True, size=14)
    sheet["A2"] = (f"Ngày giao dịch: {result.day:%d/%m/%Y}   Kênh thu: {result.destination} ({provider})   "
                   f"Lập lúc: {_local(made_at)}")
    sheet["A2"].font = Font(italic=True)
    row = 4
    sheet.cell(row, 1, "Tổng hợp").font = Font(bold=True)
    for col, title in enumerate(("Kết quả", "Số giao dịch", "Số tiền quyết toán (đ)"), start=2):
        cell = sheet.cell(row, col, title)
        cell.font, cell.fill, cell.border = Font(bold=True), header_fill, box
    for outcome, label in OUTCOMES.items():
        row += 1
        picked = [line for line in result.lines if line.outcome == outcome]
        summary = (label, len(picked), sum(line.settled_amount or 0 for line in picked))
        for col, value in enumerate(summary, start=2):
            cell = sheet.cell(row, col, value)
            cell.border = box
            if col == 4:
                cell.number_format = MONEY
    row += 1
    for col, value in enumerate(("Tổng cộng", len(result.lines), result.settled_total), start=2):
        cell = sheet.cell(row, col, value)
        cell.font, cell.border = Font(bold=True), box
        if col == 4:
            cell.number_format = MONEY
    row += 2
    header_row = row
    for col, title in enumerate(HEADERS, start=1):
        cell = sheet.cell(row, col, title)
        cell.font, cell.fill, cell.border = Font(bold=True), header_fill, box
        cell.alignment = Alignment(wrap_text=True, vertical="center", horizontal="center")
    ordered = [*result.anomalies, *(line for line in result.lines if line.outcome not in ANOMALIES)]
    for n, line in enumerate(ordered, start=1):
        row += 1
        values = (n, OUTCOMES[line.outcome], line.bill_code, line.transaction_id or "", line.dossier_code or "",
                  line.bill_amount, line.settled_amount, line.callbacks, _local(line.paid_at), line.note)
        for col, value in enumerate(values, start=1):
            cell = sheet.cell(row, col, value)
            cell.border = box
            cell.alignment = Alignment(wrap_text=col in (2, 10), vertical="top")
            if col in (6, 7):
                cell.number_format = MONEY
            if line.outcome in ANOMALIES:
                cell.fill = anomaly_fill
    for col, width in enumerate(WIDTHS, start=1):
        sheet.column_dimensions[get_column_letter(col)].width = width
    sheet.freeze_panes = sheet.cell(header_row + 1, 1)
    sheet.print_title_rows = f"{header_row}:{header_row}"
    row += 3
    for col, (who, how) in zip((2, 5, 9), (("NGƯỜI LẬP BIỂU", "(Ký, ghi rõ họ tên)"),
                                           ("KẾ TOÁN", "(Ký, ghi rõ họ tên)"),
                                           ("THỦ TRƯỞNG ĐƠN VỊ", "(Ký, ghi rõ họ tên, đóng dấu)")), strict=True):
        sheet.cell(row, col, who).font = Font(bold=True)
        sheet.cell(row + 1, col, how).font = Font(italic=True)
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A4
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    return book


def write_report(result: Reconciliation, provider: str, directory: Path,
                 made_at: datetime | None = None) -> tuple[Path, Path]:
    """Write the day's CSV (UTF-8 with a BOM, so spreadsheets read the diacritics) and xlsx; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"reconciliation-{result.destination}-{result.day.isoformat()}"
    csv_path, xlsx_path = stem.with_suffix(".csv"), stem.with_suffix(".xlsx")
    csv_path.write_text("\ufeff" + report_csv(result.lines), encoding="utf-8")
    report_workbook(result, provider, made_at or datetime.now(VN_TZ)).save(xlsx_path)
    return csv_path, xlsx_path
