"""The LGSP exchange's simulator, with every unit of the directory behind it (they accept after 5 s, decide 30 s
later)."""

from __future__ import annotations

from typing import Any

from config.units import load_directory
from sandbox.lgsp import UnitConfig, create_app
from services.base import Configured
from services.transfer.deliver import TransferOptions


def exchange(configured: list[Configured]) -> Any:
    options = configured[0].options
    assert isinstance(options, TransferOptions)
    units = {code: UnitConfig(name=unit.name, accept_seconds=5, process_seconds=30)
             for code, unit in load_directory(options.units_file).handling().items()}
    return create_app(username=options.username, password=options.password.get_secret_value(), units=units)
