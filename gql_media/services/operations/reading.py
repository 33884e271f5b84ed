"""Operations from JSON and back: what processImage and processVideo submit and what a job
row stores are the same JSON (camelCase, omitted fields left out).

Reading checks each field against its ``Param`` (kind, range, allowed values, length) and
each operation's own rules, and reports every problem with the path of the field at fault,
so one request gets all of them back as userErrors. ``to_json`` writes what ``read_*``
reads.
"""

from __future__ import annotations

from typing import Any, TypeVar

from gql_media.errors import ErrorCode, InvalidInput, UserError
from gql_media.services.input_limits import text_problem
from gql_media.services.operations.fields import NAME, Model, Param
from gql_media.services.operations.image import IMAGE_MODELS, ImageOperation, Variant
from gql_media.services.operations.video import VIDEO_MODELS, VideoOperation, VideoStep
from gql_media.settings import Settings

M = TypeVar("M", bound=Model)
_IMAGE = {model.spec.name: model for model in IMAGE_MODELS}
_VIDEO = {model.spec.name: model for model in VIDEO_MODELS}
_NAME_PROBLEM = "name: 1-64 letters, digits, '-' or '_'"


class Reading:
    """The problems found so far, and the uploads (by field) that what was read refers to;
    whether those exist is for the caller to check (``missing_media``)."""

    def __init__(self) -> None:
        self.errors: list[UserError] = []
        self.media: list[tuple[str, str]] = []  # (field, media id)

    def add(self, field: str, message: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENT) -> None:
        self.errors.append(UserError(code, message, field))

    def missing_media(self, known: set[str], message: str) -> None:
        """A NOT_FOUND problem for each upload referred to that is not ``known``."""
        for field, media_id in self.media:
            if media_id not in known:
                self.add(field, message, ErrorCode.NOT_FOUND)

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidInput(self.errors)


def _number(value: Any, where: str, p: Param, reading: Reading) -> Any:
    if value is None:
        if p.required:
            reading.add(where, f"{p.name} is required")
            return p.low
        return p.default
    assert p.low is not None and p.high is not None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not p.low <= value <= p.high
    ):
        reading.add(where, p.out_of_range)
        value = p.default if p.default is not None else p.low
    return int(value) if p.kind == "int" and value is not None else value


def _choice(value: Any, where: str, p: Param, reading: Reading) -> Any:
    if value is None:
        return p.default
    if value not in p.values:
        reading.add(where, f"{p.name} must be one of {', '.join(p.values)}")
        return p.default
    return value


def _text(value: Any, where: str, p: Param, reading: Reading) -> str:
    """A free-form string: bounded, and storable (see ``input_limits``); a required one
    must not be blank."""
    default = str(p.default or "")
    if p.required and not (isinstance(value, str) and value.strip()):
        reading.add(where, f"{p.name} must be 1 to {p.max_chars} characters")
        return "?"
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        reading.add(where, f"{p.name} must be a string")
        return default
    problem = text_problem(where, value, p.max_chars)
    if problem is not None:
        reading.errors.append(problem)
        return default
    return value


def _value(data: dict[str, Any], where: str, p: Param, reading: Reading) -> Any:
    """The value of ``p`` in ``data``, checked; its default (or a stand-in) when missing
    or wrong."""
    value = data.get(p.name)
    where = f"{where}.{p.name}"
    if p.kind in ("int", "float"):
        return _number(value, where, p, reading)
    if p.kind == "choice":
        return _choice(value, where, p, reading)
    if p.kind == "bool":
        return bool(p.default if value is None else value)
    if p.kind == "media":
        media_id = str(value or "")
        reading.media.append((where, media_id))
        return media_id
    return _text(value, where, p, reading)


def read_model(
    model: type[M], data: dict[str, Any], where: str, reading: Reading, **given: Any
) -> M:
    """``model`` from the JSON object ``data`` at path ``where``; the fields read otherwise
    (a list of operations, a name that must be unique) are ``given``."""
    values = {
        p.python_name: _value(data, where, p, reading)
        for p in model.spec.params
        if p.python_name not in given
    }
    return model(**values, **given)


def _entry(raw: Any, where: str, models: dict[str, type[M]], reading: Reading) -> M | None:
    """The one operation an entry names (besides its ``name``), read, with its rules."""
    if not isinstance(raw, dict):
        reading.add(where, "an operation must be an object")
        return None
    given = [(k, v) for k, v in raw.items() if v is not None and k != "name"]
    if len(given) != 1:
        reading.add(where, "give exactly one operation per entry")
        return None
    key, data = given[0]
    where = f"{where}.{key}"
    model = models.get(key)
    if model is None:
        reading.add(where, f"unknown operation {key!r}")
        return None
    op = read_model(model, data if isinstance(data, dict) else {}, where, reading)
    for field, message in op.problems():
        reading.add(f"{where}.{field}" if field else where, message)
    return op


def _name(raw: Any, where: str, names: set[str], what: str, reading: Reading) -> bool:
    """Whether ``raw`` is a good name, not among ``names`` (to which it is added)."""
    if not isinstance(raw, str) or not NAME.fullmatch(raw):
        reading.add(where, _NAME_PROBLEM)
        return False
    if raw in names:
        reading.add(where, f"{what} name {raw!r} is used twice")
    names.add(raw)
    return True


def read_variants(settings: Settings, raw: Any, reading: Reading) -> list[Variant]:
    """The variants of a processImage request; the problems go to ``reading``."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= settings.max_variants:
        reading.add("variants", f"give 1 to {settings.max_variants} variants")
        reading.raise_any()
    variants: list[Variant] = []
    names: set[str] = set()
    for i, data in enumerate(raw):
        if isinstance(data, dict):
            variants.append(_variant(settings, data, f"variants.{i}", i, names, reading))
        else:
            reading.add(f"variants.{i}", "a variant must be an object")
    return variants


def _variant(
    settings: Settings,
    data: dict[str, Any],
    where: str,
    index: int,
    names: set[str],
    reading: Reading,
) -> Variant:
    name = data.get("name")
    if not _name(name, f"{where}.name", names, "variant", reading):
        name = f"variant-{index}"
    entries = data.get("operations") or []
    if not isinstance(entries, list) or len(entries) > settings.max_operations:
        reading.add(f"{where}.operations", f"at most {settings.max_operations} operations")
        entries = []
    operations = [
        op
        for j, entry in enumerate(entries)
        if (op := _entry(entry, f"{where}.operations.{j}", _IMAGE, reading)) is not None
    ]
    return read_model(Variant, data, where, reading, name=name, operations=tuple(operations))


def read_video_steps(settings: Settings, raw: Any, reading: Reading) -> list[VideoStep]:
    """The operations of a processVideo request; the problems go to ``reading``."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= settings.max_operations:
        reading.add("operations", f"give 1 to {settings.max_operations} operations")
        reading.raise_any()
    steps: list[VideoStep] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        op = _entry(entry, f"operations.{i}", _VIDEO, reading)
        if op is None:
            continue
        given = entry.get("name") or None
        step = VideoStep(op, given if isinstance(given, str) else None)
        if step.output is not None:  # a name given to no output names nothing
            _name(given or step.output, f"operations.{i}.name", names, "output", reading)
        steps.append(step)
    return steps


def to_json(model: Model) -> dict[str, Any]:
    """The JSON that ``read_model`` reads: the described fields that are not None."""
    return {
        p.name: value
        for p in model.spec.params
        if (value := getattr(model, p.python_name)) is not None
    }


def _entry_json(op: ImageOperation | VideoOperation) -> dict[str, Any]:
    return {op.spec.name: to_json(op) if op.spec.params else True}


def variants_json(variants: list[Variant]) -> list[dict[str, Any]]:
    """The stored form of ``variants``, in the schema's order of fields."""
    return [
        {"name": v.name, "operations": [_entry_json(op) for op in v.operations], **to_json(v)}
        for v in variants
    ]


def video_steps_json(steps: list[VideoStep]) -> list[dict[str, Any]]:
    """The stored form of ``steps``."""
    return [
        {**({"name": step.name} if step.name else {}), **_entry_json(step.operation)}
        for step in steps
    ]
