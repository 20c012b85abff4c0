"""A destination's kind-specific options, typed: read from the routing file and the environment, validated once.

Each service declares a :class:`ServiceOptions` model for the destinations of its kind. :func:`resolve` fills it
from the destination's table in ``config/relay.toml`` (the format operators already write):

- an option ``KEY`` is its value in the file; ``KEY_env = "VAR"`` names an environment variable that overrides it
  when set and not empty (``url_env = "MOTCUA_PORTAL_URL"``);
- a secret (a field marked :class:`Secret`) is never written in the file: it is read only from the variable
  that ``KEY_env`` names, else the field's default variable (``MOTCUA_PORTAL_PASSWORD``), and is a ``SecretStr``,
  so reprs and logs show it masked;
- a variable is read from the environment, else the ``.env`` file, and a secret also from the file that its
  ``VAR_FILE`` names (:mod:`config.environ`);
- a key the model does not know, a bad value, a secret written in the file or a required secret whose variable is
  not set is a :class:`OptionsError` whose message names the destination and the option or the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationError

from config.environ import EnvironError, lookup, lookup_secret
from config.routing import Destination, parse_duration

Environ = Callable[[str], str | None]
OptionsT = TypeVar("OptionsT", bound="ServiceOptions")

# a number of seconds, or "5s", "2m", "1h", "7d" in the file
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _words(value: Any) -> Any:
    return value.replace(",", " ").split() if isinstance(value, str) else value


# a list in the file, or "a, b c" in a variable
Words = Annotated[list[str], BeforeValidator(_words)]


def _http(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, not {value!r}")
    return value


# a service's base URL
HttpUrl = Annotated[str, AfterValidator(_http)]

class OptionsError(ValueError):
    """A destination whose options cannot be used; the message names the destination and what to fix."""

    def __init__(self, destination: str, problems: list[str]) -> None:
        super().__init__(f"destination {destination}: " + "; ".join(problems))
        self.destination = destination
        self.problems = problems


class ServiceOptions(BaseModel):
    """The options of one destination of a kind (subclassed by each service)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def notices(self) -> list[str]:
        """What works but will not serve the destination as its service expects (a credential left unset that
        the service will ask for): said when a worker starts, a line each, never refused."""
        return []


@dataclass(frozen=True)
class Secret:
    """Marks an option as a secret (``Annotated[SecretStr, Secret("MOTCUA_X")]``): read only from the environment,
    ``env`` being its variable unless the file names another (``KEY_env``). ``required`` may depend on the other
    options (``lambda o: o.get("provider") == "bank"``); an optional one is typed ``SecretStr | None = None``."""

    env: str | None = None
    required: bool | Callable[[Mapping[str, Any]], bool] = True

    def needed(self, values: Mapping[str, Any]) -> bool:
        return self.required(values) if callable(self.required) else self.required


def secret_fields(model: type[ServiceOptions]) -> dict[str, Secret]:
    """The model's secret options."""
    return {name: marker for name, info in model.model_fields.items()
            for marker in info.metadata if isinstance(marker, Secret)}


def secret_variable(destination: Destination, model: type[ServiceOptions], key: str) -> str | None:
    """The variable secret ``key`` of ``destination`` is read from (``None`` when ``key`` is not a secret)."""
    marker = secret_fields(model).get(key)
    if marker is None:
        return None
    named = destination.options.get(f"{key}_env")
    return str(named) if named else marker.env


def option_variable(destination: Destination, key: str, default: str | None = None) -> str | None:
    """The variable that overrides option ``key`` of ``destination`` (its ``KEY_env``), else ``default``."""
    named = destination.options.get(f"{key}_env")
    return str(named) if named else default


def read_environ(name: str) -> str | None:
    """A variable's value from the environment or ``.env`` (:mod:`config.environ`); an empty one counts as not
    set."""
    return lookup(name)


def resolve(destination: Destination, model: type[OptionsT], environ: Environ | None = None) -> OptionsT:
    """The destination's options as ``model``, with the environment's overrides and secrets (see the module).

    Variables are read by :mod:`config.environ` (the environment, ``.env``, and ``NAME_FILE`` for a secret), or
    by ``environ`` when one is given."""
    plain: Environ = environ or lookup
    secret: Environ = environ or lookup_secret
    raw = dict(destination.options)
    secrets = secret_fields(model)
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in sorted(k for k in raw if k.endswith("_env")):
        base = key[: -len("_env")]
        variable = raw.pop(key)
        if base not in model.model_fields:
            problems.append(f"unknown option {key!r}")
            continue
        if base in secrets:
            continue  # read below, with the default variable
        if not isinstance(variable, str) or not variable:
            problems.append(f"{key} must name an environment variable")
            continue
        value = plain(variable)
        if value is not None:
            values[base], sources[base] = value, variable
    for key in secrets:
        if key in raw:
            raw.pop(key)
            problems.append(f"{key} is a secret: it is never written in the routing file; name the variable that "
                            f"holds it with {key}_env")
    for key, value in raw.items():
        values.setdefault(key, value)
    for key, marker in secrets.items():
        variable = secret_variable(destination, model, key)
        try:
            value = secret(variable) if variable else None
        except EnvironError as exc:
            problems.append(str(exc))
            continue
        if value is not None:
            values[key] = SecretStr(value)
        elif marker.needed(values):
            problems.append(f"set {variable} ({key})" if variable else f"name the variable of its {key} with {key}_env")
    if problems:
        raise OptionsError(destination.name, problems)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise OptionsError(destination.name, [_problem(err, sources) for err in exc.errors(include_url=False)]) \
            from None


def _problem(error: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    key = loc[0] if loc else ""
    where = ".".join(loc) or "options"
    if error.get("type") == "extra_forbidden":
        return f"unknown option {where!r}"
    origin = f" (from {sources[key]})" if key in sources else ""
    return f"{where}{origin}: {error.get('msg')}"
