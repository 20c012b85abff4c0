"""The log level as a process changes it: a logger caches its set-up on first use, and must still follow."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import ROOT

SCRIPT = """
import structlog
from config.logging import configure_logging

configure_logging("json", "WARNING")
log = structlog.get_logger("relay.test")
log.info("below.warning")
log.warning("at.warning")
configure_logging("json", "INFO")
log.info("at.info")
log.debug("below.info")
"""


def test_a_logger_first_used_under_warning_logs_info_once_the_level_is_info() -> None:
    # given a logger first used while the level was WARNING, when the process sets INFO
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    # then its info lines appear from then on, and what is below the level at each moment never does
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(line["event"], line["level"]) for line in lines] == [("at.warning", "warning"), ("at.info", "info")]
