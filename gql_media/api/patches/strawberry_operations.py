"""How strawberry refuses an operation type a transport does not carry (no switch: it is
how strawberry itself answers, used whatever ``GQL_MEDIA_PATCHES`` says).

Why: a subscription sent over HTTP would run as a plain field and fail as an internal
error. Strawberry refuses an operation type by raising ``InvalidOperationTypeError``,
which its HTTP view answers 400 and its streams turn into an error "… are not allowed"
(a query over the legacy graphql-ws protocol, which carries subscriptions only). The api
raises it for a subscription over HTTP (``refuse``) and recognises it to give that error
its code and a clearer message (``refused_type``).

Internals relied on (checked by ``tests/test_patches.py``):
``strawberry.schema.exceptions.InvalidOperationTypeError(operation_type)`` with its
``operation_type``; the HTTP view's ``execute_single`` answering it 400; strawberry's
streams keeping it as the ``original_error`` of the error they make of it.
"""

from __future__ import annotations

from typing import NoReturn

from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.graphql import OperationType


def refuse(operation_type: OperationType) -> NoReturn:
    """Refuse ``operation_type`` on this transport, as strawberry does."""
    raise InvalidOperationTypeError(operation_type)


def refused_type(error: BaseException | None) -> str | None:
    """The operation type (``query``, ``mutation``, ``subscription``) that ``error``
    refused, if it is strawberry's refusal."""
    if isinstance(error, InvalidOperationTypeError):
        return str(error.operation_type.value)
    return None
