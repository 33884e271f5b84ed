"""Guards of ``gql_media/api/patches``: each patch's dependency is within the pinned minor
version, the internal names it relies on still have the shape it uses, and it still does
what it is for; ``GQL_MEDIA_PATCHES`` turns the speed patches off, and the api then serves
the same through the dependencies' public paths."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator
from importlib.metadata import version
from typing import Any

import pytest
import strawberry
import uvicorn
from graphql import GraphQLSchema, GraphQLSyntaxError, parse
from pydantic import ValidationError
from starlette.websockets import WebSocket
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.schema import schema as strawberry_schema
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryObjectDefinition
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from gql_media.api.errors import Classifier
from gql_media.api.patches import PATCHES, shared_results, strawberry_validation
from gql_media.api.patches.shared_results import QuietExecution, SharedEventExecution
from gql_media.api.patches.strawberry_results import LightEventResults
from gql_media.api.patches.strawberry_validation import CachedValidation
from gql_media.api.patches.strawberry_ws import TransportWSHandler, transport_handler
from gql_media.api.patches.uvicorn_ws import GuardedWebSocketProtocol, LightWebSocketProtocol
from gql_media.api.protocols import server_options
from gql_media.api.schema import FastMediaSchema, MediaSchema, build_schema
from gql_media.api.security import DocumentCache, DocumentChecks
from gql_media.errors import ErrorCode
from gql_media.settings import Settings
from tests.support import GENERATE, graphql_ws, start_server
from tests.test_protocols import Transport

# -- the pinned minor versions (pyproject.toml) ---------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "minor"),
    [
        ("strawberry-graphql", "0.341."),
        ("graphql-core", "3.3."),
        ("starlette", "1.10."),
        ("uvicorn", "0.54."),
        ("cross-web", "0.9."),
    ],
)
def test_a_patched_dependency_is_the_minor_version_its_patches_were_written_for(
    distribution: str, minor: str
) -> None:
    assert version(distribution).startswith(minor), (
        f"{distribution} {version(distribution)}: check api/patches against it, then "
        "move its pin and this guard"
    )


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def assert_methods(cls: type, signatures: dict[str, list[str]]) -> None:
    for name, expected in signatures.items():
        assert parameters(getattr(cls, name)) == expected, (cls.__name__, name)


# -- uvicorn: uvicorn_http (always on) and uvicorn_ws -------------------------------------


async def test_uvicorns_http_protocol_has_the_callbacks_and_state_the_guard_follows() -> None:
    assert_methods(
        HttpToolsProtocol,
        {
            "connection_made": ["self", "transport"],
            "connection_lost": ["self", "exc"],
            "data_received": ["self", "data"],
            "on_message_begin": ["self"],
            "on_headers_complete": ["self"],
            "on_body": ["self", "body"],
            "on_message_complete": ["self"],
            "on_response_complete": ["self"],
            "handle_websocket_upgrade": ["self"],
        },
    )
    assert {408, 431, 503} <= set(httptools_impl.STATUS_LINE)
    config = uvicorn.Config(lambda *_: None, lifespan="off", log_config=None)
    config.load()
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(Transport())
    assert protocol in protocol.connections
    assert protocol.flow.read_paused is False and protocol.pipeline is not None
    assert protocol.cycle is None and protocol.loop is not None
    cycle_attributes = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    for name in ("response_started", "response_complete", "disconnected", "message_event"):
        assert f"self.{name}" in cycle_attributes, name
    protocol.connection_lost(None)


async def test_uvicorns_websocket_protocol_has_the_state_the_patches_replace_and_read() -> None:
    assert_methods(
        WebSocketsSansIOProtocol,
        {
            "send": ["self", "message"],
            "handle_ping": ["self"],
            "keepalive_timeout": ["self"],
        },
    )
    config = uvicorn.Config(lambda *_: None, lifespan="off", log_config=None)
    config.load()
    protocol = WebSocketsSansIOProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(Transport())
    # what LightWebSocketProtocol replaces by lighter objects of the same methods
    assert isinstance(protocol.queue, asyncio.Queue)
    assert isinstance(protocol.writable, asyncio.Event) and protocol.writable.is_set()
    for name in (
        "conn",
        "transport",
        "loop",
        "close_timer",
        "close_sent",
        "handshake_complete",
        "disconnected",
        "read_paused",
        "initial_response",
    ):
        assert hasattr(protocol, name), name
    for name in ("send_text", "send_close", "data_to_send"):
        assert callable(getattr(protocol.conn, name)), name
    protocol.connection_lost(None)


def test_the_light_inbox_and_flag_have_every_method_uvicorn_calls() -> None:
    import re

    from uvicorn.protocols.websockets import websockets_sansio_impl

    from gql_media.api.patches.uvicorn_ws import Flag, Inbox

    source = inspect.getsource(websockets_sansio_impl)
    for attribute, replacement in (("queue", Inbox), ("writable", Flag)):
        called = set(re.findall(rf"self\.{attribute}\.(\w+)", source))
        assert called and called <= set(dir(replacement)), (attribute, called)


def test_starlettes_websocket_keeps_the_send_it_was_given() -> None:
    """``protocol_of`` finds uvicorn's protocol through it."""

    async def receive() -> Any:
        return {}

    async def send(message: Any) -> None:
        pass

    websocket = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    assert websocket._send is send


def test_the_ws_patch_chooses_the_protocol_and_the_guard_stays() -> None:
    on = server_options(Settings(patches="all"))["ws"]
    off = server_options(Settings(patches="none"))["ws"]
    assert issubclass(on, LightWebSocketProtocol)
    assert issubclass(off, GuardedWebSocketProtocol)
    assert not issubclass(off, LightWebSocketProtocol)
    assert off.max_send_buffer == Settings().ws_max_send_buffer_bytes


# -- strawberry's WebSocket handlers: strawberry_ws (caps always on) and direct_events ---


def test_strawberrys_websocket_handlers_have_what_ours_override_and_read() -> None:
    assert_methods(
        BaseGraphQLTransportWSHandler,
        {
            "handle_connection_init": ["self", "message"],
            "handle_subscribe": ["self", "message"],
            "handle_task_exception": ["self", "error"],
            "run_operation": ["self", "operation"],
            "send_message": ["self", "message"],
        },
    )
    assert_methods(
        BaseGraphQLWSHandler,
        {
            "handle_connection_init": ["self", "message"],
            "handle_start": ["self", "message"],
            "send_message": ["self", "message"],
        },
    )
    transport_source = inspect.getsource(BaseGraphQLTransportWSHandler)
    for name in (
        "self.operations",
        "self.connection_init_timeout_task",
        "self.connection_init_received",
        "self.connection_acknowledged",
        "self.websocket",
        "self.context",
        "self.view",
    ):
        assert name in transport_source, name
    legacy_source = inspect.getsource(BaseGraphQLWSHandler)
    assert "self.tasks" in legacy_source and "self.connection_acknowledged" in legacy_source
    assert "self.view" in legacy_source
    # the view builds its handler from an attribute our view sets per instance
    view_source = inspect.getsource(AsyncBaseHTTPView)
    assert "self.graphql_transport_ws_handler_class(" in view_source
    assert "self.graphql_ws_handler_class(" in view_source


def test_the_handler_takes_its_switches_from_the_settings() -> None:
    on = transport_handler(Settings(patches="all"))
    off = transport_handler(Settings(patches="none"))
    assert issubclass(on, TransportWSHandler) and issubclass(off, TransportWSHandler)
    assert on.release_init_task and on.direct_events
    assert not off.release_init_task and not off.direct_events


def test_strawberry_refuses_an_operation_type_with_the_error_we_raise_and_read() -> None:
    from strawberry.schema.exceptions import InvalidOperationTypeError
    from strawberry.types.graphql import OperationType

    from gql_media.api.patches.strawberry_operations import refuse, refused_type

    with pytest.raises(InvalidOperationTypeError) as caught:
        refuse(OperationType.SUBSCRIPTION)
    assert refused_type(caught.value) == "subscription"
    assert refused_type(ValueError()) is None
    view_source = inspect.getsource(AsyncBaseHTTPView.execute_single)
    assert "except InvalidOperationTypeError" in view_source and "400" in view_source
    stream_source = inspect.getsource(strawberry_schema._coerce_pre_execution_error)
    assert "InvalidOperationTypeError" in stream_source and "original_error=error" in stream_source


def test_strawberrys_view_reads_requests_through_the_hooks_ours_override() -> None:
    import cross_web
    from strawberry.http import async_base_view, base

    from gql_media.api.patches.strawberry_http import HTTPException, ReadingView

    assert HTTPException is cross_web.HTTPException
    assert base.HTTPException is HTTPException and async_base_view.HTTPException is HTTPException
    assert parameters(ReadingView.__mro__[1].parse_json) == ["self", "data"]
    assert parameters(ReadingView.__mro__[1].parse_multipart) == ["self", "request"]
    view_source = inspect.getsource(AsyncBaseHTTPView)
    assert "self.parse_json(" in view_source and "self.parse_multipart(" in view_source
    assert parameters(HTTPException) == ["status_code", "reason"]
    # trusted documents: a GET's query string is read by parse_query_params, which reads
    # its variables with parse_json, and a GET naming no query may get GraphiQL's page
    base_view = ReadingView.__mro__[1]
    assert parameters(base_view.parse_query_params) == ["self", "params"]
    assert parameters(base_view.should_render_graphql_ide) == ["self", "request"]
    assert "self.parse_query_params(" in view_source
    assert "self.should_render_graphql_ide(" in view_source
    assert "self.parse_json(" in inspect.getsource(base.BaseView.parse_query_params)


# -- graphql-core's executor: shared_results ---------------------------------------------


def test_the_executor_has_what_shared_results_overrides_and_reads() -> None:
    assert issubclass(SharedEventExecution, StrawberryGraphQLCoreExecutionContext)
    assert_methods(
        StrawberryGraphQLCoreExecutionContext,
        {
            "execute_operation": ["self", "serially"],
            "build_per_event_executor": ["self", "payload"],
            "build_resolve_info": ["self", "field_def", "field_nodes", "parent_type", "path"],
        },
    )
    assert "hide_suggestions" in parameters(StrawberryGraphQLCoreExecutionContext.build)
    schema = build_schema(Settings(patches="all"))
    document = parse("subscription($id: ID!) { jobUpdated(id: $id) { id } }")
    executor = SharedEventExecution.build(
        schema._schema, document, raw_variable_values={"id": "job_1"}
    )
    assert isinstance(executor, SharedEventExecution)
    assert executor.variable_values.coerced == {"id": "job_1"}
    assert executor.operation is document.definitions[0]
    event = executor.build_per_event_executor(object())
    assert isinstance(event, SharedEventExecution) and event.root_value is not None


def test_the_quiet_executor_hides_suggestions() -> None:
    schema = build_schema(Settings(patches="all", introspection=False))
    document = parse(
        "mutation($i: GenerateImageInput!) { generateImage(input: $i) { job { id } } }"
    )
    errors = QuietExecution.build(
        schema._schema, document, raw_variable_values={"i": {"promt": "x"}}
    )
    assert isinstance(errors, list) and errors
    assert not [e for e in errors if "Did you mean" in e.message]
    loud = shared_results.SharedEventExecution.build(
        schema._schema, document, raw_variable_values={"i": {"promt": "x"}}
    )
    assert isinstance(loud, list) and [e for e in loud if "Did you mean" in e.message]


# -- strawberry's schema: strawberry_results and strawberry_validation -----------------


def test_strawberrys_schema_has_the_result_hook_and_the_error_hook() -> None:
    assert parameters(strawberry.Schema._handle_execution_result) == [
        "self",
        "context",
        "result",
        "extensions_runner",
        "skip_process_errors",
    ]
    assert parameters(strawberry.Schema.process_errors) == [
        "self",
        "errors",
        "execution_context",
    ]
    assert issubclass(type(build_schema(Settings(patches="all"))), LightEventResults)
    assert not issubclass(type(build_schema(Settings(patches="none"))), LightEventResults)


@strawberry.type
class Failing:
    @strawberry.field
    def fail(self) -> int:
        raise RuntimeError("a bug")


@strawberry.type
class FailingSubscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncGenerator[int, None]:
        yield 1
        raise RuntimeError("a bug")


def codes(result: Any) -> list[str]:
    return [error.extensions["code"] for error in result.errors or ()]


@pytest.mark.parametrize("schema_class", [MediaSchema, FastMediaSchema])
async def test_errors_get_codes_through_process_errors_on_every_path(
    schema_class: type[MediaSchema],
) -> None:
    """``process_errors`` sees (and may change in place) every error list strawberry
    returns: on execute and on subscribe, before, during and around execution."""
    schema = schema_class(
        query=Failing,
        subscription=FailingSubscription,
        documents=DocumentCache(1 << 20),
        classifier=Classifier(max_tokens=100),
    )
    assert codes(await schema.execute("{ fail ")) == ["GRAPHQL_PARSE_FAILED"]
    assert codes(await schema.execute("{ nothing }")) == ["GRAPHQL_VALIDATION_FAILED"]
    failed = await schema.execute("{ fail }")
    assert codes(failed) == ["INTERNAL_ERROR"]
    assert failed.errors and failed.errors[0].message == "Internal server error."
    stream = await schema.subscribe("subscription { ticks }")
    assert not isinstance(stream, ExecutionResult)
    results = [result async for result in stream]
    assert [r.data for r in results] == [{"ticks": 1}, None]
    assert [codes(r) for r in results] == [[], ["INTERNAL_ERROR"]]
    broken = await schema.subscribe("subscription { ticks ")
    assert not isinstance(broken, ExecutionResult)
    assert [codes(r) async for r in broken] == [["GRAPHQL_PARSE_FAILED"]]
    # an extension's own error, raised around the operation (no principal)
    ours = build_schema(Settings(patches="all" if schema_class is FastMediaSchema else "none"))
    anonymous = type("Anonymous", (), {"caller": None, "request": None})()
    assert codes(await ours.execute("{ __typename }", context_value=anonymous)) == [
        "UNAUTHENTICATED"
    ]


def test_strawberry_validates_with_its_two_rules_and_skips_what_an_extension_did() -> None:
    source = inspect.getsource(strawberry_schema.validate_document)
    assert "MaybeNullValidationRule" in source and "OneOfInputValidationRule" in source
    assert "pre_execution_errors is None" in inspect.getsource(strawberry_schema._run_validation)
    assert isinstance(build_schema(Settings())._schema, GraphQLSchema)


async def test_a_known_document_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ours: list[Any] = []
    theirs: list[Any] = []
    validate = strawberry_validation.validate_document
    monkeypatch.setattr(
        strawberry_validation,
        "validate_document",
        lambda *args: ours.append(args) or validate(*args),
    )
    monkeypatch.setattr(
        strawberry_schema, "validate_document", lambda *args: theirs.append(args) or []
    )
    schema = build_schema(Settings(patches="all"))
    context = type("Anon", (), {"caller": object(), "request": None})()
    for _ in range(3):
        result = await schema.execute("{ __typename }", context_value=context)
        assert result.errors is None
    assert (len(ours), len(theirs)) == (1, 0)


def test_the_validation_patch_chooses_the_extension() -> None:
    def extension(settings: Settings) -> Any:
        [factory] = build_schema(settings).extensions
        return factory()  # type: ignore[operator]

    assert isinstance(extension(Settings(patches="all")), CachedValidation)
    off = extension(Settings(patches="none"))
    assert isinstance(off, DocumentChecks) and not isinstance(off, CachedValidation)


# -- strawberry's input conversion: strawberry_inputs -------------------------------------


def test_strawberrys_input_hook_has_the_shape_the_plan_fills() -> None:
    assert "from_input" in StrawberryObjectDefinition.__dataclass_fields__
    assert parameters(InputContext.convert) == ["self", "value", "type_", "keys"]


def test_the_inputs_patch_installs_and_takes_off_the_plan() -> None:
    def planned(settings: Settings) -> bool:
        definition = build_schema(settings).get_type_by_name("GenerateImageInput")
        assert isinstance(definition, StrawberryObjectDefinition)
        return definition.from_input is not None

    assert planned(Settings(patches="all"))
    assert not planned(Settings(patches="none"))  # the same types, taken back
    assert planned(Settings(patches="strawberry_inputs"))


# -- the setting ---------------------------------------------------------------------------


def test_the_setting_takes_all_none_or_names() -> None:
    assert Settings().patches_on == frozenset(PATCHES)
    assert Settings(patches="none").patches_on == frozenset()
    assert Settings(patches=" uvicorn_ws, Strawberry_Inputs ").patches_on == {
        "uvicorn_ws",
        "strawberry_inputs",
    }
    with pytest.raises(ValidationError, match="unknown patches uvicorn_htp"):
        Settings(patches="uvicorn_htp")


def test_every_patch_has_its_module() -> None:
    import importlib

    for name in PATCHES:
        # arq's patches share one module, beside the queue adapter (the worker imports it)
        arq = name.startswith("arq_")
        where = "gql_media.adapters.arq_patch" if arq else f"gql_media.api.patches.{name}"
        module = importlib.import_module(where)
        assert module.__doc__ and "Internals relied on" in module.__doc__, name


# -- error codes from types and our own rules --------------------------------------------


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("{ jobs " + "a " * 30 + "}", ErrorCode.TOO_MANY_TOKENS),
        ("{ jobs " + "# a comment\n" * 50 + "}", ErrorCode.TOO_MANY_TOKENS),
        ("{ jobs { totalCount ", ErrorCode.GRAPHQL_PARSE_FAILED),
        ('{ jobs "unterminated', ErrorCode.GRAPHQL_PARSE_FAILED),
        ("{ jobs ) " + "a " * 30 + "}", ErrorCode.GRAPHQL_PARSE_FAILED),
        ("{ jobs " + "a " * 30 + '"unterminated', ErrorCode.TOO_MANY_TOKENS),
    ],
)
def test_a_syntax_error_is_classified_by_its_type_and_our_token_rule(
    document: str, code: ErrorCode
) -> None:
    with pytest.raises(GraphQLSyntaxError) as caught:
        parse(document, max_tokens=20)
    classified = Classifier(max_tokens=20).classify(caught.value)
    assert classified.extensions == {"code": code.value}
    assert classified.message == caught.value.message


def test_hints_are_cut_only_when_asked() -> None:
    from graphql import GraphQLError

    error = GraphQLError("Cannot query field 'jbos' on type 'Query'. Did you mean 'jobs'?")
    assert Classifier().classify(error).message == error.message
    assert (
        Classifier(cut_hints=True).classify(error).message
        == "Cannot query field 'jbos' on type 'Query'."
    )


# -- a real server with every patch off ----------------------------------------------------

FOLLOW = "subscription($id: ID!) { jobUpdated(id: $id) { id status } }"


async def test_the_api_serves_with_every_patch_off(settings_factory: Any) -> None:
    """A query, a mutation, a subscription to its end and a refused document, through the
    dependencies' public paths only (the protections stay)."""
    from gql_media.adapters import redis as redis_adapter

    settings = settings_factory(patches="none", max_query_depth=3)
    assert settings.patches_on == frozenset()
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=True) as live:
        view = live.app.graphql_view
        assert type(view.schema) is MediaSchema
        assert view.schema.execution_context_class is StrawberryGraphQLCoreExecutionContext
        queried = await live.graphql("{ providers { name } }")
        assert "errors" not in queried and queried["data"]["providers"]

        created = await live.graphql(GENERATE, {"input": {"prompt": "a kite", "provider": "mock"}})
        assert "errors" not in created, created
        job = created["data"]["generateImage"]["job"]
        assert job["status"] == "QUEUED"

        async with graphql_ws(live.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job["id"]})
            updates = await asyncio.wait_for(ws.collect(op), timeout=30)
        statuses = [u["data"]["jobUpdated"]["status"] for u in updates]
        assert statuses[-1] == "SUCCEEDED" and all(u["data"]["jobUpdated"] for u in updates)

        deep = await live.graphql("{ jobs { edges { node { outputs { id } } } } }")
        assert [e["extensions"]["code"] for e in deep["errors"]] == ["QUERY_TOO_DEEP"]
        assert "data" not in deep or deep["data"] is None


@pytest.mark.parametrize("patches", ["all", "none"])
async def test_the_handler_lets_go_of_its_init_timeout_task_only_with_the_patch(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch, patches: str
) -> None:
    from gql_media.adapters import redis as redis_adapter

    handlers: list[TransportWSHandler] = []
    handle_connection_init = TransportWSHandler.handle_connection_init

    async def recording(self: TransportWSHandler, message: Any) -> None:
        await handle_connection_init(self, message)
        handlers.append(self)

    monkeypatch.setattr(TransportWSHandler, "handle_connection_init", recording)
    settings = settings_factory(patches=patches)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        async with graphql_ws(live.ws_url):
            [handler] = handlers
            assert handler.connection_init_received and handler.connection_acknowledged
            task = handler.connection_init_timeout_task
            if patches == "all":
                assert task is None
            else:  # strawberry's own: kept, done (canceled once the init came)
                assert task is not None and task.done()
