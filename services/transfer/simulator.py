"""The LGSP exchange's simulator, with every unit of the directory behind it (they accept after 5 s, decide 30 s
later), and the gateway in front of it for the destination's consumer key when it has one."""

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
    secret = options.consumer_secret.get_secret_value() if options.consumer_secret is not None else None
    return create_app(username=options.username, password=options.password.get_secret_value(), units=units,
                      consumer_key=options.consumer_key if secret is not None else None, consumer_secret=secret)
