"""``.env.example``: every variable the relay reads, made from the settings and the routing file themselves.

The core settings (:class:`config.settings.Settings`), the console's accounts, each service's own settings and,
for each destination of the routing file, the variables its options name (``KEY_env``) and its secrets. A variable
is written commented out with its default where it has one, and empty where an operator must give it (an empty
value counts as not set). ``motcua-relay env-example`` prints it; ``tests/test_env_example.py`` holds the
repository's ``.env.example`` to it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from config.environ import ENV_FILE_VARIABLE, FILE_SUFFIX, is_secret
from config.options import option_variable, secret_fields, secret_variable
from config.routing import RoutingConfig
from config.settings import DEFAULT_ROUTING_FILE, PACKAGE_ROOT, Settings
from services.registry import Registry

HEADER = f"""\
# motcua-relay: every variable it reads (`motcua-relay env-example` writes this file).
#
# Copy it to .env beside where the processes run (or name the file with {ENV_FILE_VARIABLE}, in the environment):
# each variable is read from the environment first, then from this file. An empty value counts as not set.
# Values are taken as written, never expanded: a console account's hash and its $ signs need no quoting here
# (in a shell, single quotes). A secret may instead be read from a file: NAME{FILE_SUFFIX}=/run/secrets/name
# (its one trailing newline dropped), as container platforms mount them; set NAME or NAME{FILE_SUFFIX}, not both.
# `motcua-relay doctor` checks what is set before going live.
"""

# set before going live: written empty, not commented out
NEEDED = {"MOTCUA_INTAKE_SECRET", "MOTCUA_CONSOLE_SECRET", "MOTCUA_CONSOLE_OPERATORS"}
CONSOLE = [
    ("MOTCUA_CONSOLE_SECRET", "the console's session key: 32 random characters or more "
                              "(python -c 'import secrets; print(secrets.token_urlsafe(32))'); secret"),
    ("MOTCUA_CONSOLE_OPERATORS", "the console's accounts, name:hash pairs separated by commas or spaces, each "
                                 "printed by `motcua-relay console hash-password NAME`; secret"),
]


def render(routing_file: Path = DEFAULT_ROUTING_FILE, registry: Registry | None = None) -> str:
    """The file's text for the routing file ``routing_file`` and the services found."""
    from config.routing import load_routing
    from services.registry import get_registry

    registry = registry or get_registry()
    routing = load_routing(routing_file)
    parts = [HEADER, *_section("the relay", _settings(Settings)),
             *_section("the operator console", ((name, None, why) for name, why in CONSOLE))]
    seen: set[str] = set()  # a variable two services read (a templates file) is written once, with the first
    for service in registry:
        lines = list(_settings(service.settings)) if service.settings is not None else []
        lines += _destinations(routing, service.kind, service.options, seen)
        parts += _section(f"{service.title} ({service.kind})", lines)
    return "\n".join(parts).rstrip("\n") + "\n"


Line = tuple[str, str | None, str]  # variable, default (None: none), what it is


def _section(title: str, lines: Any) -> Iterator[str]:
    lines = list(lines)
    if not lines:
        return
    yield f"# ---- {title}"
    for variable, default, why in lines:
        for text in textwrap.wrap(why, 110) if why else []:
            yield f"# {text}"
        if variable in NEEDED or default is None:
            yield f"{variable}="
        else:
            yield f"# {variable}={default}"
    yield ""


def _settings(model: type[Any]) -> Iterator[Line]:
    prefix = model.model_config.get("env_prefix", "")
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}".upper(), _default(field), _why(field)


def _default(field: FieldInfo) -> str | None:
    if field.default is PydanticUndefined or field.default_factory is not None:
        return None
    return _written(field.default)


def _written(value: Any) -> str:
    """A default as a variable holds it (a list as words)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(PACKAGE_ROOT):
        return ""  # a file packaged with the relay (its description says which), not one beside the processes
    return str(value)


def _why(field: FieldInfo) -> str:
    text = field.description or ""
    if not is_secret(field):
        return text
    secret = "secret" if "SecretStr" in str(field.annotation) else "may carry a password: NAME_FILE accepted"
    return f"{text}; {secret}" if text else secret


def _destinations(routing: RoutingConfig, kind: str, model: Any, seen: set[str]) -> list[Line]:
    """The variables of each destination of ``kind``: its ``KEY_env`` overrides and its secrets."""
    lines: list[Line] = []
    secrets = secret_fields(model)
    for destination in routing.destinations.values():
        if destination.kind != kind:
            continue
        for key in sorted(k[: -len("_env")] for k in destination.options if k.endswith("_env")):
            if key in secrets:
                continue
            variable = option_variable(destination, key)
            if variable and variable not in seen:
                seen.add(variable)
                value = destination.options.get(key)
                field = model.model_fields.get(key)
                why = f"{destination.name}: {key}" + (f", {field.description}" if field and field.description else "")
                lines.append((variable, _written(value), why))
        for key, marker in secrets.items():
            variable = secret_variable(destination, model, key)
            if variable and variable not in seen:
                seen.add(variable)
                need = "required" if marker.required is True else "optional" if not callable(marker.required) \
                    else "required by some options"
                field = model.model_fields[key]
                why = f"{destination.name}: {key} ({need}), " + (f"{field.description}; " if field.description else "")
                lines.append((variable, None, why + "secret"))
    return lines
