"""The Zalo templates file: which event sends which ZNS template, filled how (``config/zalo.toml``).

Read and validated here, once per file and process, so the adapter that fills the templates
(``adapters/zalo.py``) is handed a :class:`~schemas.zalo.TemplateConfig` and reads no file.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from schemas.zalo import TemplateConfig

DEFAULT_TEMPLATES_FILE = Path(__file__).resolve().parent / "zalo.toml"


@lru_cache(maxsize=8)
def load_templates(path: str | None = None) -> TemplateConfig:
    """``config/zalo.toml`` (or the given file), validated."""
    raw = tomllib.loads(Path(path or DEFAULT_TEMPLATES_FILE).read_text(encoding="utf-8"))
    return TemplateConfig.model_validate(raw)
