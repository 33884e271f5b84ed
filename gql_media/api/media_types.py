"""GraphQL inputs of uploads and processing jobs, and their translation to plain JSON.

The input of each operation is derived from its definition in ``services.operations``:
a field for each of the operation's fields, with its type, description and default; the
enums from the choices the fields take. Each list entry of operations names exactly one
operation (the services check this and report the entry otherwise); the rest of the
checking happens in the services too, so a request gets every problem back at once as
userErrors.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from datetime import datetime
from typing import Any, Optional, TypeVar

import strawberry

from gql_media.api.choices import enum_of, snake, value_type
from gql_media.api.types import (
    MediaAsset,
    UserError,
    deadline_field,
    group_field,
    priority_field,
)
from gql_media.services import operations as ops

T = TypeVar("T")


def _field(param: ops.Param) -> Any:
    """A field with the description and default that the operation states."""
    if param.required:
        return strawberry.field(description=param.description)
    default = param.default
    if param.choices and default is not None:
        default = enum_of(param.choices)(default)
    return strawberry.field(default=default, description=param.description)


def _fill(cls: type[T], model: type[ops.Model], description: str) -> type[T]:
    """``cls`` as the GraphQL input of ``model``: a field for each of the model's, in
    order; one the model does not describe (a list of operations) comes from ``cls``."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    params = {param.python_name: param for param in model.spec.params}
    annotations: dict[str, Any] = {}
    for name in model.spec.fields:
        param = params.get(name)
        if param is None:
            annotations[name] = own[name]
            continue
        annotations[name] = value_type(param)
        setattr(cls, name, _field(param))
    cls.__annotations__ = annotations
    return strawberry.input(cls, description=description)


def _derived(model: type[ops.Model]) -> Callable[[type[T]], type[T]]:
    """The class as the GraphQL input of ``model`` (see ``_fill``)."""
    return lambda cls: _fill(cls, model, model.spec.description)


def _input_of(model: type[ops.Model]) -> type:
    """The input type ``<Model>Input`` of an operation with fields."""
    cls = type(f"{model.__name__}Input", (), {"__module__": __name__})
    return _fill(cls, model, model.spec.description)


_INPUTS = {
    model: _input_of(model) for model in (*ops.IMAGE_MODELS, *ops.VIDEO_MODELS) if model.spec.params
}


def _one_of(models: tuple[type[ops.Model], ...], description: str) -> Callable[[type[T]], type[T]]:
    """The class as an input holding one optional field per operation of ``models`` (after
    its own fields): the operation's input, or a Boolean for one without fields."""

    def build(cls: type[T]) -> type[T]:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for model in models:
            name = snake(model.spec.name)
            annotations[name] = Optional[_INPUTS.get(model, bool)]  # noqa: UP045
            setattr(cls, name, strawberry.field(default=None, description=model.spec.description))
        cls.__annotations__ = annotations
        return strawberry.input(cls, description=description)

    return build


@_one_of(ops.IMAGE_MODELS, "Exactly one operation.")
class ImageOperationInput:
    pass


@_derived(ops.Variant)
class ImageVariantInput:
    operations: list[ImageOperationInput] = strawberry.field(default_factory=list)


@strawberry.input
class ProcessImageInput:
    media_id: strawberry.ID = strawberry.field(description=f"An uploaded image. {ops.ANIMATION}")
    variants: list[ImageVariantInput]
    idempotency_key: str | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )
    priority: int = priority_field()
    group: str | None = group_field()
    deadline: datetime | None = deadline_field()


@_one_of(ops.VIDEO_MODELS, "Exactly one operation, with an optional output name.")
class VideoOperationInput:
    name: str | None = _field(ops.OUTPUT_NAME)


@strawberry.input
class ProcessVideoInput:
    media_id: strawberry.ID
    operations: list[VideoOperationInput]
    idempotency_key: str | None = None
    webhook_url: str | None = strawberry.field(
        default=None, description="POST the job here, signed, when it ends."
    )
    priority: int = priority_field()
    group: str | None = group_field()
    deadline: datetime | None = deadline_field()


@strawberry.type
class UploadMediaPayload:
    media: MediaAsset | None
    user_errors: list[UserError]


def to_json(value: Any) -> Any:
    """An input object as plain JSON with the GraphQL field names; omitted fields dropped."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            ops.camel(f.name): to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    return value
