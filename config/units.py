"""The unit directory: every unit's code, level, kind, name and the unit above it, and the codes that were closed.

Data, not code: ``config/units.csv`` (columns ``code, level, kind, name, parent, successor``; ``#`` lines are
comments), replaced with the transfer destination's ``units_file`` (``MOTCUA_TRANSFER_UNITS_FILE``) and, for the
intake, ``MOTCUA_UNITS_FILE``. Levels are as government is since 1 July 2025: ``national`` (ministries),
``province`` (the public-administration centre, the departments) and ``commune`` (wards, communes, special
zones); ``closed`` codes name their ``successor``, or none when the unit's level was abolished.

A dossier travels along the tree: up from its unit to the common ancestor, then down, one hop per unit that
handles dossiers. A ``gateway`` (the national and the provincial exchange) is passed through, never a hop: a
commune's dossier for a department is one hop, and so are a department's for a ministry and a commune's for
another commune. Deeper trees (an office under a department) make longer chains.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

DEFAULT_FILE = Path(__file__).resolve().parent / "units.csv"
LEVELS = ("national", "province", "commune", "closed")
Level = Literal["national", "province", "commune", "closed"]
GATEWAY = "gateway"


class DirectoryError(ValueError):
    """A unit the directory does not know, or no way between two units: shown to the operator as it is."""


class ClosedCode(DirectoryError):
    """A closed code with no successor: its unit's level was abolished, nothing answers for it now."""


@dataclass(frozen=True)
class Unit:
    code: str
    level: str
    name: str
    parent: str | None
    kind: str = ""
    successor: str | None = None

    @property
    def closed(self) -> bool:
        return self.level == "closed"

    @property
    def gateway(self) -> bool:
        return self.kind == GATEWAY


@dataclass(frozen=True)
class Resolved:
    """A code as the directory answers it: the unit that answers for it now, and the closed code it came as."""

    code: str
    closed: Unit | None = None

    @property
    def renamed(self) -> bool:
        return self.closed is not None


@dataclass(frozen=True)
class Directory:
    units: dict[str, Unit]
    source: str

    def unit(self, code: str) -> Unit:
        try:
            return self.units[code]
        except KeyError:
            raise DirectoryError(f"unit {code} is not in the unit directory ({self.source})") from None

    def handling(self) -> dict[str, Unit]:
        """The units that receive dossiers: neither a closed code nor a gateway."""
        return {code: u for code, u in self.units.items() if not u.closed and not u.gateway}

    def resolve(self, code: str) -> Resolved:
        """The live unit for ``code``: itself, or the successor of a closed code (followed to the end); a code
        the directory does not list is taken as it is. :class:`ClosedCode` for one closed with no successor."""
        unit = self.units.get(code)
        if unit is None or not unit.closed:
            return Resolved(code)
        first, seen = unit, {code}
        while unit.closed:
            if unit.successor is None:
                raise ClosedCode(f"unit code {code} ({first.name}) is closed and has no successor: its level was "
                                 f"abolished on 1 July 2025; send the commune's or the department's code "
                                 f"({self.source})")
            if unit.successor in seen:
                raise DirectoryError(f"the unit directory ({self.source}) has a loop of successors at {code}")
            seen.add(unit.successor)
            unit = self.unit(unit.successor)
        return Resolved(unit.code, first)

    def _ancestry(self, code: str) -> list[str]:
        chain, seen = [code], {code}
        while (parent := self.unit(chain[-1]).parent) is not None:
            if parent in seen:
                raise DirectoryError(f"the unit directory ({self.source}) has a loop at {parent}")
            chain.append(parent)
            seen.add(parent)
        return chain

    def path(self, origin: str, target: str) -> list[str]:
        """The units a dossier passes through from ``origin`` to ``target``, both included, gateways left out
        (closed codes are followed to their successors)."""
        origin, target = self.resolve(origin).code, self.resolve(target).code
        if origin == target:
            raise DirectoryError(f"a transfer from {origin} to itself")
        for code in (origin, target):
            if self.unit(code).gateway:
                raise DirectoryError(f"{code} ({self.unit(code).name}) is an exchange, not a unit that handles "
                                     f"dossiers ({self.source})")
        up, down = self._ancestry(origin), self._ancestry(target)
        common = next((u for u in up if u in down), None)
        if common is None:
            raise DirectoryError(f"no way from {origin} to {target} in the unit directory ({self.source})")
        route = up[: up.index(common) + 1] + list(reversed(down[: down.index(common)]))
        return [code for code in route if code in (origin, target) or not self.unit(code).gateway]


def _rows(source: Path) -> list[dict[str, str]]:
    try:
        with source.open(encoding="utf-8", newline="") as f:
            lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        raise DirectoryError(f"unit directory {source}: {exc.strerror}") from exc
    return list(csv.DictReader(lines))


@lru_cache(maxsize=8)
def load_directory(path: str | None = None) -> Directory:
    source = Path(path) if path else DEFAULT_FILE
    units: dict[str, Unit] = {}
    for row in _rows(source):
        code, level = (row.get("code") or "").strip(), (row.get("level") or "").strip()
        if not code or level not in LEVELS:
            raise DirectoryError(f"{source}: a row needs a code and a level ({', '.join(LEVELS)}): {row}")
        if code in units:
            raise DirectoryError(f"{source}: {code} is listed twice")
        units[code] = Unit(code, level, (row.get("name") or "").strip(), (row.get("parent") or "").strip() or None,
                           (row.get("kind") or "").strip(), (row.get("successor") or "").strip() or None)
    for unit in units.values():
        if unit.parent is not None and unit.parent not in units:
            raise DirectoryError(f"{source}: {unit.code}'s parent {unit.parent} is not in the file")
        if unit.parent is not None and units[unit.parent].closed:
            raise DirectoryError(f"{source}: {unit.code}'s parent {unit.parent} is a closed code")
        if unit.closed and unit.parent is not None:
            raise DirectoryError(f"{source}: the closed code {unit.code} names a parent; a closed code names its "
                                 f"successor")
        if unit.successor is not None and (not unit.closed or unit.successor not in units):
            raise DirectoryError(f"{source}: {unit.code}'s successor {unit.successor} "
                                 + ("is given for a unit that is not closed" if not unit.closed
                                    else "is not in the file"))
    return Directory(units, str(source))
