"""Personal data: how it is marked on models and how it is masked.

A field whose annotation carries :data:`PERSONAL` (use the :data:`PersonalStr` alias)
holds a citizen's name, ID number, phone, e-mail or street address. Logs and stored
response excerpts never show such a value in clear: :func:`masked_dump` masks the
marked fields of a model, and :func:`mask_text` masks free text (a response body)
by pattern and by the exact values the caller knows to be personal.

Masking never cuts into an identifier: in free text an ID number (CCCD, 12 digits; CMND, 9) or a phone is
one only where it stands alone, not inside a run of ``[A-Za-z0-9._:-]`` (the characters of event ids, UUIDs,
dossier codes, bill and receipt numbers, hashes and timestamps; a run may end with a sentence's full stop),
and a known value only as a whole word. Where a record says what a value is (a field's marker, a log key),
that decides, not its look.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Annotated, Any, get_args

from pydantic import BaseModel, ValidationError


class _Personal:
    """Marker placed in a field's metadata."""

    def __repr__(self) -> str:
        return "PERSONAL"


PERSONAL = _Personal()
PersonalStr = Annotated[str, PERSONAL]

# Alone: not preceded by an identifier's character, not followed by more of the identifier (punctuation that ends
# a sentence may follow).
_ALONE_BEFORE = r"(?<![A-Za-z0-9._:\-])"
_ALONE_AFTER = r"(?![._:\-]*[A-Za-z0-9])"
# Vietnamese citizen ID (12 digits, older cards 9), phones in national or international form.
_PHONE_RE = re.compile(rf"{_ALONE_BEFORE}(?:\+?84|0)(?:[\s.\-]?\d){{8,10}}{_ALONE_AFTER}")
_ID_RE = re.compile(rf"{_ALONE_BEFORE}(?:\d{{12}}|\d{{9}}){_ALONE_AFTER}")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def mask_value(value: str) -> str:
    """Keep just enough to recognise a value: first and last character, length hidden."""
    value = str(value)
    if len(value) <= 2:
        return "*" * len(value)
    if len(value) <= 4:
        return value[0] + "***"
    return value[0] + "***" + value[-2:]


def _annotation_is_personal(annotation: Any) -> bool:
    if any(m is PERSONAL for m in getattr(annotation, "__metadata__", ())):
        return True
    return any(_annotation_is_personal(arg) for arg in get_args(annotation))


@lru_cache(maxsize=512)
def is_personal(model: type[BaseModel], field: str) -> bool:
    info = model.model_fields.get(field)
    if info is None:
        return False
    return any(m is PERSONAL for m in info.metadata) or _annotation_is_personal(info.annotation)


def masked_dump(model: BaseModel) -> dict[str, Any]:
    """``model_dump(mode="json")`` with every personal field masked, recursively."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is not None and is_personal(type(model), name):
            out[name] = mask_value(str(value))
        else:
            out[name] = _masked_any(value)
    return out


def _masked_any(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return masked_dump(value)
    if isinstance(value, list | tuple):
        return [_masked_any(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked_any(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def personal_values(model: BaseModel) -> list[str]:
    """Every personal value held by a model, recursively (to mask them in free text)."""
    found: list[str] = []
    for name, personal in _value_fields(type(model)):
        value = getattr(model, name)
        if value is None:
            continue
        if personal:
            found.append(str(value))
        elif isinstance(value, BaseModel):
            found.extend(personal_values(value))
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, BaseModel):
                    found.extend(personal_values(item))
    return found


@lru_cache(maxsize=512)
def _value_fields(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """The fields of ``model`` :func:`personal_values` reads: each personal one (``True``), and each that may hold
    models (``False``: its annotation names one, or ``Any``); a field of text, numbers or times alone holds neither.
    Worked out once per model: an excerpt is masked with its event's values at every attempt."""
    return tuple((name, is_personal(model, name)) for name, info in model.model_fields.items()
                 if is_personal(model, name) or _nested_models(model, name) or _mentions_any(info.annotation))


def _mentions_any(annotation: Any) -> bool:
    return annotation is Any or any(_mentions_any(arg) for arg in get_args(annotation))


def personal_values_in(data: Any, model: type[BaseModel]) -> list[str]:
    """Every personal value in a model's JSON form (a dict), found by the model's markers.

    For stored payloads: no re-validation, yet the same fields as :func:`personal_values`.
    """
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for name in model.model_fields:
        value = data.get(name)
        if value is None:
            continue
        if is_personal(model, name):
            found.append(str(value))
            continue
        for nested in _nested_models(model, name):
            for item in value if isinstance(value, list) else [value]:
                found.extend(personal_values_in(item, nested))
    return found


@lru_cache(maxsize=512)
def _nested_models(model: type[BaseModel], field: str) -> tuple[type[BaseModel], ...]:
    def walk(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in get_args(annotation) for m in walk(arg)]

    return tuple(walk(model.model_fields[field].annotation))


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    """Mask personal data in free text: the known values first (each where it is a whole word), then by
    pattern (where it stands alone, never inside an identifier)."""
    # only the values the text holds: a pattern of values is compiled per event (too many for re's cache)
    values = sorted({k for k in known if len(k) >= 3 and k in text}, key=len, reverse=True)
    if values:
        whole = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, values)) + r")(?!\w)")
        text = whole.sub(lambda m: mask_value(m.group(0)), text)
    if "@" in text:  # the pattern alone costs more than the rest of the masking: it is tried at every word
        text = _EMAIL_RE.sub(lambda m: mask_value(m.group(0)), text)
    text = _PHONE_RE.sub(_masked_unless_dossier_code, text)
    return _ID_RE.sub(lambda m: mask_value(m.group(0)), text)


def _masked_unless_dossier_code(match: re.Match[str]) -> str:
    """A phone written with dashes, or a short dossier code (``000-240315-12``): the code's shape decides."""
    return match.group(0) if _dossier_shape().fullmatch(match.group(0)) else mask_value(match.group(0))


@lru_cache(maxsize=1)
def _dossier_shape() -> re.Pattern[str]:
    from schemas.events import DEFAULT_DOSSIER_PATTERN  # the events' module imports this one

    return re.compile(DEFAULT_DOSSIER_PATTERN)


def error_fields(exc: ValidationError, root: str = "") -> list[str]:
    """The dotted paths of the fields a validation refused, sorted, each once — never the values,
    which may be personal (``root`` names an error about the whole input)."""
    return sorted({".".join(str(p) for p in e["loc"]) or root
                   for e in exc.errors(include_url=False, include_input=False)})
