"""The unit directory of the inter-level exchange: every unit's code, level, name and the unit above it.

Data, not code: ``config/units.csv`` (columns ``code, level, name, parent``), replaced with the transfer
destination's ``units_file`` (``MOTCUA_TRANSFER_UNITS_FILE``). A dossier travels along the tree: up from
its unit to the common ancestor, then down, one hop per edge, so a commune's dossier for the province goes
commune → district → province, two hops.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

DEFAULT_FILE = Path(__file__).resolve().parent / "units.csv"
LEVELS = ("commune", "district", "province")
Level = Literal["commune", "district", "province"]


class DirectoryError(ValueError):
    """A unit the directory does not know, or no way between two units: shown to the operator as it is."""


@dataclass(frozen=True)
class Unit:
    code: str
    level: str
    name: str
    parent: str | None


@dataclass(frozen=True)
class Directory:
    units: dict[str, Unit]
    source: str

    def unit(self, code: str) -> Unit:
        try:
            return self.units[code]
        except KeyError:
            raise DirectoryError(f"unit {code} is not in the unit directory ({self.source})") from None

    def _ancestry(self, code: str) -> list[str]:
        chain, seen = [code], {code}
        while (parent := self.unit(chain[-1]).parent) is not None:
            if parent in seen:
                raise DirectoryError(f"the unit directory ({self.source}) has a loop at {parent}")
            chain.append(parent)
            seen.add(parent)
        return chain

    def path(self, origin: str, target: str) -> list[str]:
        """The units a dossier passes through from ``origin`` to ``target``, both included."""
        if origin == target:
            raise DirectoryError(f"a transfer from {origin} to itself")
        up, down = self._ancestry(origin), self._ancestry(target)
        common = next((u for u in up if u in down), None)
        if common is None:
            raise DirectoryError(f"no way from {origin} to {target} in the unit directory ({self.source})")
        return up[: up.index(common) + 1] + list(reversed(down[: down.index(common)]))


@lru_cache(maxsize=8)
def load_directory(path: str | None = None) -> Directory:
    source = Path(path) if path else DEFAULT_FILE
    units: dict[str, Unit] = {}
    with source.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            code = (row.get("code") or "").strip()
            level = (row.get("level") or "").strip()
            if not code or level not in LEVELS:
                raise DirectoryError(f"{source}: a row needs a code and a level ({', '.join(LEVELS)}): {row}")
            units[code] = Unit(code, level, (row.get("name") or "").strip(), (row.get("parent") or "").strip() or None)
    for unit in units.values():
        if unit.parent is not None and unit.parent not in units:
            raise DirectoryError(f"{source}: {unit.code}'s parent {unit.parent} is not in the file")
    return Directory(units, str(source))
