"""``motcua-relay``: run the relay's processes and answer an operator's questions.

Configuration comes from the environment, an optional ``.env`` and, for secrets, ``*_FILE`` variables
(:mod:`config.environ`); see README.
"""

from __future__ import annotations

from typing import NoReturn

from rich.console import Console

from cli import audit, ledger, processes, service_commands  # noqa: F401  (their commands register on the app)
from cli.common import app
from cli.doctor import doctor

app.command("doctor")(doctor)


def main() -> None:
    """The command line; a configuration that cannot be read is one line naming what is wrong (exit 2), not a
    traceback: a setting of a wrong type, a secret set twice or unreadable, a routing file that does not parse."""
    import tomllib

    from pydantic import ValidationError

    from config.environ import EnvironError

    try:
        app()
    except (EnvironError, tomllib.TOMLDecodeError) as exc:
        _configuration_error(str(exc))
    except ValidationError as exc:
        if exc.title not in _CONFIGURATION_MODELS and not exc.title.endswith("Settings"):
            raise
        _configuration_error("; ".join(
            f"{_variable(exc.title, err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)))


# the models a configuration is read into (their errors are the operator's to fix, not the relay's bugs)
_CONFIGURATION_MODELS = {"RoutingConfig", "Destination", "Route"}


def _variable(model: str, loc: tuple[int | str, ...]) -> str:
    """Where a configuration error is: a setting's variable (``MOTCUA_DELIVERY_BATCH``), or the routing file's
    path to the value."""
    where = ".".join(str(part) for part in loc)
    if model.endswith("Settings") and len(loc) == 1:
        return f"MOTCUA_{where}".upper()
    return f"routing file: {where}" if where else "routing file"


def _configuration_error(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]configuration: {message}[/]", highlight=False, soft_wrap=True)
    raise SystemExit(2)

if __name__ == "__main__":
    main()
