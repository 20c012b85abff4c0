"""The relay as an operator installs it: a wheel built from the repository, in a virtual environment of its own.

The wheel is built from a copy of the repository's files (what ``git`` tracks, and new files not ignored),
so a stale ``build/`` of a working copy cannot lend it a file, and nothing is written into the repository.
The fresh venv gets the project from the wheel and nothing else: the dependencies come from the test
venv's site-packages through a ``.pth`` line (no download), which Python adds to ``sys.path`` after the
fresh venv's own site-packages without running that directory's ``.pth`` files, so the test venv's
editable install is not among them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port
from tests.test_demo import check_summary

# What setuptools prints when it objects: a Python warning ("…/setuptools/…py:82: SetuptoolsDeprecationWarning: …",
# which pip relays as BuildBackendWarning) or a distutils-style "warning: …" line.
SETUPTOOLS_WARNING = re.compile(r"^.*\b\w+Warning\b.*$|^\s*warning: .*$", re.MULTILINE)
TOP_LEVEL = ("adapters", "api", "bench", "cli", "config", "connectors", "sandbox", "schemas", "store", "tasks")
# Run by the fresh venv's python: where each module named in argv, and a console template, was read from.
WHERE = """
import importlib, json, sys
from api.console.app import TEMPLATES
found = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}
found["login.html"] = TEMPLATES.get_template("login.html").filename
print(json.dumps(found))
"""


@dataclass(frozen=True)
class Build:
    wheel: Path
    output: str


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: no ``MOTCUA_`` setting, nothing that steers Python's imports
    or silences its warnings (``PYTHONPATH``, ``PYTHONWARNINGS``, ``PYTHONDONTWRITEBYTECODE``, …)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOTCUA_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def copy_sources(dest: Path) -> Path:
    """The repository's files, as a clean clone with the working copy's edits would have them."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working copy is not built
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    tmp = tmp_path_factory.mktemp("packaging")
    sources = copy_sources(tmp / "src")
    # -v: the backend's whole output, its distutils-style "warning:" lines too (without it, pip relays only
    # the backend's Python warnings); build isolation fetches setuptools from the index
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp / "dist"), str(sources)],
        cwd=tmp, env=clean_env(), capture_output=True, text=True, timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    wheels = list((tmp / "dist").glob("motcua_relay-*.whl"))
    assert len(wheels) == 1, wheels
    return Build(wheels[0], output)


def test_the_wheel_builds_without_setuptools_warnings(build: Build) -> None:
    assert "Successfully built motcua-relay" in build.output
    assert SETUPTOOLS_WARNING.findall(build.output) == []
    assert "is absent from the `packages` configuration" not in build.output


def test_the_wheel_holds_the_data_files_and_no_tests(build: Build) -> None:
    with zipfile.ZipFile(build.wheel) as wheel:
        names = set(wheel.namelist())
        top_level = wheel.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()

    def in_wheel(folder: str, *suffixes: str) -> set[str]:
        return {n.removeprefix(f"{folder}/") for n in names if n.startswith(f"{folder}/") and n.endswith(suffixes)}

    def in_repo(folder: str, *suffixes: str) -> set[str]:
        return {p.name for p in (ROOT / folder).iterdir() if p.name.endswith(suffixes)}

    assert in_wheel("api/console/templates", ".html") == in_repo("api/console/templates", ".html") != set()
    assert "api/console/static/console.css" in names  # read when the console is imported
    assert "store/migrations/env.py" in names and "store/migrations/script.py.mako" in names
    assert in_wheel("store/migrations/versions", ".py") == in_repo("store/migrations/versions", ".py") != set()
    assert {"config/relay.toml", "config/zalo.toml", "config/units.csv", "config/admin_units.csv"} <= names
    assert in_wheel("config", ".toml", ".csv") == in_repo("config", ".toml", ".csv")
    assert set(TOP_LEVEL) <= set(top_level) and "tests" not in top_level
    assert not any(n.startswith("tests/") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "motcua-relay = cli.main:main" in scripts


@pytest.mark.timeout(200)
def test_the_wheel_installs_and_runs_the_demo_in_a_fresh_venv(build: Build, tmp_path: Path) -> None:
    # given a fresh venv with the wheel installed, the test venv's site-packages lending the dependencies
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(build.wheel)],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()).resolve()
    lent = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "motcua-test-dependencies.pth").write_text("".join(f"{path}\n" for path in lent), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="160")

    # and the project (code and templates) is read from the fresh venv, not from the repository nor the
    # test venv's editable install
    where = subprocess.run([str(python), "-c", WHERE, *TOP_LEVEL, "cli.main", "store.db"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    assert set(found) == {*TOP_LEVEL, "cli.main", "store.db", "login.html"}
    for module, path in found.items():
        assert Path(path).resolve().is_relative_to(site), f"{module} read from {path}, not from {site}"

    # when an operator runs the demo in an empty directory, no Redis answering (the in-process broker)
    port = free_port()  # bound and released: nothing answers there
    demo = subprocess.run(
        [str(venv / "bin" / "motcua-relay"), "demo", "--dossiers", "5", "--json", str(work / "s.json")],
        cwd=work, env={**env, "MOTCUA_DEMO_REDIS_PROBE": f"127.0.0.1:{port}", "MOTCUA_DEMO_SEED": "11"},
        capture_output=True, text=True, timeout=120,
    )

    # then it ends well, on the migrations and the configuration the wheel carried
    assert demo.returncode == 0, f"exit {demo.returncode}\n{demo.stdout[-4000:]}\n{demo.stderr[-4000:]}"
    assert "Traceback" not in demo.stdout + demo.stderr
    summary = json.loads((work / "s.json").read_text(encoding="utf-8"))
    assert summary["broker"]["mode"] == "memory"
    assert summary["open"] == 0 and summary["delivered"] > 0
    check_summary(summary, work, demo.stdout)
