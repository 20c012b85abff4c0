"""The administrative-unit table postal orders resolve their province and district codes from.

The table is data (``config/admin_units.csv``; a destination's ``admin_units_file`` replaces it):
one row per unit with its code, level, name, parent and aliases. Names are matched the way
people write them: without diacritics, case or the unit-kind word ("Tỉnh Quảng Ninh",
"quang ninh" and "T. Quảng Ninh" are one province), and a former province merged in 2025
resolves to the province it is now part of.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("admin_units.csv")
LEVELS = ("province", "district")

# Words naming the kind of unit, dropped before matching ("thanh pho ho chi minh" → "ho chi minh").
_KIND_WORDS = re.compile(
    r"^(tinh|thanh pho|tp|t|thu do|quan|huyen|thi xa|tx|thi tran|tt|phuong|p|xa|q|h)\b\.?\s*"
)


def normalise_name(name: str) -> str:
    """``"Tỉnh Quảng Ninh"`` → ``"quang ninh"``: no diacritics, case, punctuation or unit-kind word."""
    text = unicodedata.normalize("NFD", name.replace("Đ", "D").replace("đ", "d"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    stripped = _KIND_WORDS.sub("", text).strip()
    return stripped or text


class AdminUnitsError(ValueError):
    """The table file is unreadable or inconsistent."""


@dataclass
class AdminUnits:
    """Provinces and districts by normalised name; districts per province."""

    source: str
    names: dict[str, str] = field(default_factory=dict)  # province code → its official name
    provinces: dict[str, str] = field(default_factory=dict)  # normalised name or alias → code
    districts: dict[str, dict[str, str]] = field(default_factory=dict)  # province code → name → code

    @classmethod
    def load(cls, path: Path | str = DEFAULT_FILE) -> AdminUnits:
        units = cls(source=str(path))
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise AdminUnitsError(f"administrative-unit table {path}: {exc.strerror}") from exc
        for number, row in enumerate(csv.DictReader(lines), start=2):
            code, level, name = (row.get(k, "").strip() for k in ("code", "level", "name"))
            parent = (row.get("parent") or "").strip()
            if not code or not name or level not in LEVELS:
                raise AdminUnitsError(f"{path}: row {number} needs a code, a name and a level in {LEVELS}")
            keys = [normalise_name(name), *(normalise_name(a) for a in (row.get("aliases") or "").split("|")
                                             if a.strip())]
            if level == "province":
                units.names[code] = name
                for key in keys:
                    units.provinces.setdefault(key, code)
            else:
                if not parent:
                    raise AdminUnitsError(f"{path}: row {number}: district {name} names no parent province")
                for key in keys:
                    units.districts.setdefault(parent, {}).setdefault(key, code)
        unknown = sorted(set(units.districts) - set(units.names))
        if unknown:
            raise AdminUnitsError(f"{path}: districts under provinces not in the table: {', '.join(unknown)}")
        return units

    def province(self, name: str) -> str | None:
        return self.provinces.get(normalise_name(name))

    def district(self, province_code: str, name: str) -> str | None:
        return self.districts.get(province_code, {}).get(normalise_name(name))

    def has_districts(self, province_code: str) -> bool:
        return bool(self.districts.get(province_code))


@cache
def load_admin_units(path: str | None = None) -> AdminUnits:
    """The table at ``path`` (the bundled one by default), read once per process."""
    return AdminUnits.load(Path(path) if path else DEFAULT_FILE)
