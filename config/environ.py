"""Where every setting and secret is read from: one lookup for the core settings, the services' own, the
destinations' options and secrets, and the console's accounts.

A variable ``NAME`` is, in this order:

1. the process environment's ``NAME`` (what systemd's ``EnvironmentFile``, a container's ``environment`` or a
   shell's ``export`` sets);
2. ``NAME`` in the ``.env`` file: ``./.env``, or the file ``MOTCUA_ENV_FILE`` names. Values are taken as
   written, never expanded (a console account's hash holds several ``$``); quote them or not;
3. for a secret only (a password, a key, a token, the console's accounts, a URL that carries a password): the
   contents of the file that
   ``NAME_FILE`` names (in the environment or in ``.env``), a secret mounted as a file as Docker and Kubernetes
   mount them, its one trailing newline dropped. (Only secrets: several plain settings end in ``_FILE``
   themselves, ``MOTCUA_ROUTING_FILE`` the first.)

An empty value counts as not set. A secret's ``NAME`` and ``NAME_FILE`` both set is an error (which one is
meant?), and so is a ``NAME_FILE`` that cannot be read: :class:`EnvironError` names the variable, never a value.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from dotenv import dotenv_values
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_FILE_VARIABLE = "MOTCUA_ENV_FILE"
FILE_SUFFIX = "_FILE"


class EnvironError(ValueError):
    """A variable that cannot be read as configured."""


def env_file() -> Path:
    """The ``.env`` file of this process: ``MOTCUA_ENV_FILE`` (from the environment only), else ``./.env``."""
    return Path(os.environ.get(ENV_FILE_VARIABLE) or ".env")


def dotenv() -> Mapping[str, str]:
    """The ``.env`` file's variables (none when there is no file), read again only when the file changes."""
    path = env_file()
    try:
        stat = path.stat()
    except OSError:
        return {}
    return _read_dotenv(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_dotenv(path: str, mtime_ns: int, size: int) -> Mapping[str, str]:
    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {name: value for name, value in values.items() if value}


def lookup(name: str) -> str | None:
    """``NAME``'s value from the environment, else ``.env``; ``None`` when unset."""
    return os.environ.get(name) or dotenv().get(name) or None


def lookup_secret(name: str) -> str | None:
    """A secret ``NAME``'s value from the environment, ``.env`` or the file ``NAME_FILE`` names; ``None`` when
    unset."""
    value = lookup(name)
    named = lookup(name + FILE_SUFFIX)
    if named is None:
        return value
    if value is not None:
        raise EnvironError(f"both {name} and {name}{FILE_SUFFIX} are set: keep one")
    return read_secret_file(name, named)


def read_secret_file(name: str, path: str) -> str | None:
    """The contents of ``NAME_FILE``'s file, its trailing newline dropped (``None`` when empty)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvironError(f"{name}{FILE_SUFFIX} names {path}, which cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise EnvironError(f"{name}{FILE_SUFFIX} names {path}, which is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r") or None



class _Variables(PydanticBaseSettingsSource):
    """A settings class's fields from ``.env`` (names in any case, as the environment's) and, for a secret field,
    from the file its ``NAME_FILE`` names: after the environment, which pydantic's own source reads."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._dotenv = {name.upper(): value for name, value in dotenv().items()}  # names in capitals, read once

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{self.config.get('env_prefix', '')}{field_name}".upper()
        if is_secret(field):
            return lookup_secret(variable), variable, False
        return self._dotenv.get(variable), variable, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[field_name] = value
        return found


# A setting that is no SecretStr but may carry one (a URL with its password): ``Field(..., json_schema_extra=
# CARRIES_SECRET)``, so that it may be read from the file its NAME_FILE names too.
CARRIES_SECRET: dict[str, Any] = {"carries_secret": True}


def is_secret(field: FieldInfo) -> bool:
    """Whether a settings field is a secret, or carries one: it may come from the file its ``NAME_FILE`` names."""
    annotation = field.annotation
    extra = field.json_schema_extra
    return (annotation is SecretStr or SecretStr in get_args(annotation)
            or (isinstance(extra, dict) and bool(extra.get("carries_secret"))))


class EnvSettings(BaseSettings):
    """Settings read as every variable is (the module): the environment, then ``.env``, then a secret's
    ``NAME_FILE``. A value refused is not echoed (a URL carries its password)."""

    model_config = SettingsConfigDict(env_prefix="MOTCUA_", extra="ignore", env_ignore_empty=True,
                                      hide_input_in_errors=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _Variables(settings_cls)
