"""The vocabulary of operation fields: what a field means, its range, its default.

An operation is a frozen dataclass whose fields are declared with ``param()``; the
``operation`` decorator binds each field's ``Param`` (its GraphQL name, whether it is
required and its default come from the dataclass field, the kind of value from its type)
and attaches the operation's ``Spec``. Everything else (the GraphQL inputs, the reading
and checking of stored or submitted JSON, the README's tables) is derived from these.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NewType, TypeVar, Union, get_args, get_origin
from typing import get_type_hints as type_hints

MAX_SIDE = 100_000  # pixels: any side, offset or box an image operation takes
NAME_RULE = "1 to 64 letters, digits, `-` or `_`"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # whole names only: fullmatch
COLOUR = "a CSS colour: a name, `#rgb`, `#rrggbb`, `#rrggbbaa`, `rgb()` or `hsl()`"

MediaId = NewType("MediaId", str)  # the id of an upload: an ID in the schema
Kind = Literal["int", "float", "bool", "text", "choice", "media"]


def number_text(value: float) -> str:
    """``value`` as the schema, the README and messages print it: 512000, 0.005, -360."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def enum_name(value: str) -> str:
    """The GraphQL name of an enum value that the service stores as ``value``."""
    return value.upper().replace("-", "_")


def camel(name: str) -> str:
    """The JSON (and GraphQL) name of a Python field: ``strip_metadata`` → ``stripMetadata``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class Choices:
    """A set of values a field takes: a GraphQL enum, its values stored as given and shown
    by ``enum_name``, each with a description or ""."""

    name: str
    description: str
    values: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, name: str, description: str, values: Any, **about: str) -> Choices:
        """The choices of a ``Literal`` (or a tuple of values), described by ``about``."""
        given = get_args(values) or tuple(values)
        return cls(name, description, tuple((v, about.get(v, "")) for v in given))


@dataclass(frozen=True, slots=True)
class Param:
    """One field of an operation, as the schema, the README and the messages state it.

    ``default`` is what an omitted value means and what the schema shows; None with a
    ``default_note`` means it depends on something, which the note says. ``name``,
    ``python_name``, ``required``, ``default``, ``kind`` and ``values`` are bound from the
    dataclass field and its type by ``operation``.
    """

    meaning: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    default_note: str = ""
    note: str = ""  # a sentence or two after the range
    max_chars: int | None = None
    choices: Choices | None = None
    null_means_default: bool = False  # the schema lets it be null, which means the default
    name: str = ""
    python_name: str = ""
    required: bool = False
    default: Any = None
    kind: Kind = "text"
    values: tuple[str, ...] = ()  # the values allowed (a choice), perhaps fewer than choices'

    @property
    def range(self) -> str:
        """The allowed values in words, e.g. "from 8000 to 512000 bits per second"."""
        if self.low is not None and self.high is not None:
            unit = f" {self.unit}" if self.unit else ""
            return f"from {number_text(self.low)} to {number_text(self.high)}{unit}"
        if self.max_chars is not None:
            return f"at most {self.max_chars} characters"
        return ""

    @property
    def nullable(self) -> bool:
        """Whether the schema's type of the field takes null."""
        return self.null_means_default or (not self.required and self.default is None)

    @property
    def description(self) -> str:
        """The field's description in the schema (whose enums describe their own values)."""
        return self.sentences(with_choices=False)

    def sentences(self, *, with_choices: bool) -> str:
        """Meaning and range, the values allowed (those described one by one only
        ``with_choices``), then the note and the default."""
        parts = [f"{self.meaning}, {self.range}." if self.range else f"{self.meaning}."]
        names = [enum_name(value) for value in self.values]
        if any(self.choice_description(value) for value in self.values):
            if with_choices:
                parts += [f"`{enum_name(v)}`: {self.choice_description(v)}" for v in self.values]
        elif len(names) > 1:
            parts.append(f"One of {', '.join(names[:-1])} or {names[-1]}.")
        if self.note:
            parts.append(self.note)
        if self.default_note:
            parts.append(f"Default: {self.default_note}.")
        return " ".join(parts)

    @property
    def out_of_range(self) -> str:
        """The message of a value outside ``range``."""
        return f"{self.name} must be a number {self.range}"

    def choice_description(self, value: str) -> str | None:
        return dict(self.choices.values).get(value) or None if self.choices else None


_PARAM = "param"


def param(
    meaning: str,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    *,
    default: Any = dataclasses.MISSING,
    **details: Any,
) -> Any:
    """A dataclass field of an operation, described by a ``Param``; without a ``default``
    the field is required."""
    described = Param(meaning, unit, low, high, **details)
    return dataclasses.field(default=default, metadata={_PARAM: described})


@dataclass(frozen=True, slots=True)
class Spec:
    """An operation (or the options of a variant) and its fields, in schema order.

    ``name`` is the operation's key in an entry (``resize``); ``output`` is the name of the
    output a video operation makes when it is given none.
    """

    name: str
    description: str
    model: type
    params: tuple[Param, ...] = ()
    output: str | None = None
    fields: tuple[str, ...] = ()  # the Python names of all the model's fields, in order

    def __getitem__(self, name: str) -> Param:
        for found in self.params:
            if found.name == name:
                return found
        raise KeyError(name)


class Model:
    """What every operation has: its spec, attached by ``operation``."""

    __slots__ = ()
    spec: ClassVar[Spec]

    def problems(self) -> Iterator[tuple[str, str]]:
        """(field under the operation, or "", message) for combinations that are not allowed."""
        return iter(())


M = TypeVar("M", bound=Model)


def _kind(hint: Any) -> tuple[Kind, tuple[str, ...], bool]:
    """The kind of value a field's type holds, the values a ``Literal`` allows, and
    whether the type takes None."""
    args = get_args(hint)
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if optional:
        (hint,) = [arg for arg in args if arg is not type(None)]
    if get_origin(hint) is Literal:
        return "choice", tuple(str(value) for value in get_args(hint)), optional
    kinds: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", MediaId: "media"}
    return kinds.get(hint, "text"), (), optional


def bound_params(model: type) -> Iterator[Param]:
    """The ``Param`` of every described field of ``model``, bound to that field."""
    hints = type_hints(model)
    for field in dataclasses.fields(model):
        described = field.metadata.get(_PARAM)
        if described is None:
            continue
        kind, values, _ = _kind(hints[field.name])
        required = field.default is dataclasses.MISSING
        yield dataclasses.replace(
            described,
            name=camel(field.name),
            python_name=field.name,
            required=required,
            default=None if required else field.default,
            kind=kind,
            values=values,
        )


def _field_names(model: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(model))


def operation(
    name: str, description: str, *, output: str | None = None
) -> Callable[[type[M]], type[M]]:
    """Attach the ``Spec`` of the operation (a frozen dataclass of ``param()`` fields)."""

    def attach(model: type[M]) -> type[M]:
        params = tuple(bound_params(model))
        model.spec = Spec(name, description, model, params, output, _field_names(model))
        return model

    return attach
