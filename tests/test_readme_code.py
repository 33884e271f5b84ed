"""The documentation's code runs: every fenced block a reader would paste is executed, as
printed, against a live api.

Which blocks: all of README.md's and of docs/*.md, except a block whose fence comes right
after a line ``<!-- not run: <reason> -->`` (what is not meant to be pasted: output,
diagrams, other tools' configuration, and commands that install, deploy or run for minutes,
each saying where else they are exercised), and the two set-up commands on the README's
first screen, which carry no marker so that nothing there reads "not run" (``FIRST_SCREEN``
says where they are exercised). An unmarked block of a language that cannot be run fails,
so a new block is either run or says why not.

How each language runs:

- ``sh``: sourced by ``bash -e -o pipefail`` in a fresh directory holding the files blocks
  name (``photo.jpg``, ``clip.mp4``), with the venv's ``bin`` first on ``PATH`` (``gql-media``
  is this project's), ``GQL_MEDIA_URL`` naming the test api and no other ``GQL_MEDIA_*``
  variable from outside. The JSON it prints may hold no ``errors`` and no ``userErrors``; the
  ``GQL_MEDIA_*`` variables it exports must be settings that ``Settings`` accepts.
- ``python``: a script run by this venv's python.
- ``js``: an ES module run by the machine's ``node`` (20 or newer) in tests/clients, whose
  ``node_modules`` (``npm ci``, pinned by its package-lock.json) hold the packages the
  documentation tells readers to install. Anything on stderr is a failure (the examples log
  errors there).
- ``graphql``: queries and mutations POSTed, subscriptions over graphql-transport-ws. No
  errors, no userErrors (but ``PROVIDER_NOT_CONFIGURED`` for the remote providers, which the
  test api has no account for), every job a mutation makes ends SUCCEEDED, and a subscription
  ends with SUCCEEDED.
- ``ts``: the file of tests/clients it shows (tests/test_clients.py compiles and runs it),
  which must be identical.

Placeholders, the only text replaced before a block runs:

- ``http://127.0.0.1:8000``, ``ws://127.0.0.1:8000``: the test api;
- ``gqlm_...``: an API key; a block that names one runs on an api with auth required;
- ``gqlw_…``: a watch token minted for the block's job (for a block run with an unknown
  ``job_5f0c…``, one minted for another job); such a block also runs with auth required;
- ``job_5f0c…``: a job made for the block, one that succeeds at once, or in shell blocks
  (which cancel it) one that runs until canceled;
- ``med_9d4a…``: an uploaded JPEG; ``med_3b1e…``: an uploaded MP4 with sound.

A block that follows a job runs a second time as printed, where ``job_5f0c…`` is an unknown id:
it must report ``NOT_FOUND``, not crash. A block that follows a job must print its SUCCEEDED.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
import pytest
import pytest_asyncio

from gql_media.adapters import redis as redis_adapter
from gql_media.db.migrate import upgrade
from gql_media.runtime import open_runtime
from gql_media.services import auth
from gql_media.settings import Settings
from tests.conftest import fast_settings
from tests.media import jpeg, make_video
from tests.support import LiveServer, graphql_ws, start_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
CLIENTS = ROOT / "tests" / "clients"
NODE = shutil.which("node")
TIMEOUT = 45.0

URL, WS_URL = "http://127.0.0.1:8000", "ws://127.0.0.1:8000"
KEY = "gqlm_..."
TOKEN = "gqlw_…"
JOB = "job_5f0c…"
IMAGE, VIDEO = "med_9d4a…", "med_3b1e…"
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>\S.*?) -->")
# The README's first screen (tests/test_readme.py holds it to its two set-up commands)
FIRST_SCREEN = 20
FIRST_SCREEN_REASON = (
    "a set-up command of the README's first screen: tests/test_readme.py checks it, "
    "tests/test_serve.py runs serve, .ci/run runs the suite"
)
RUNNABLE = {"sh", "python", "js", "graphql", "ts"}

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the apis are the module's


@dataclass(frozen=True)
class Block:
    path: str  # of its document, from the repository's root
    line: int  # of the opening fence, counting from 1
    lang: str
    text: str
    reason: str | None  # why it is not run, from its marker

    @property
    def follows_a_job(self) -> bool:
        return "jobUpdated" in self.text and self.lang in ("python", "js")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def document_blocks(document: Path) -> list[Block]:
    path = document.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    lines = document.read_text().splitlines()
    index = 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        start, lang = index, lines[index][3:].strip()
        end = next((i for i in range(start + 1, len(lines)) if lines[i] == "```"), None)
        assert end is not None, f"{path}:{start + 1}: a fence that is never closed"
        marker = NOT_RUN.fullmatch(lines[start - 1].strip()) if start else None
        body = "".join(f"{line}\n" for line in lines[start + 1 : end])
        reason = marker["reason"] if marker else None
        if path == "README.md" and end < FIRST_SCREEN:
            reason = FIRST_SCREEN_REASON
        blocks.append(Block(path, start + 1, lang, body, reason))
        index = end + 1
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in document_blocks(document)]


def params(blocks: list[Block]) -> list[Any]:
    return [pytest.param(block, id=f"{block.where}-{block.lang}") for block in blocks]


RUN = [block for block in BLOCKS if not block.reason]
AS_PRINTED = [block for block in RUN if block.follows_a_job and JOB in block.text]


def _node_missing() -> str | None:
    if NODE is None:
        return "node is not installed"
    if not (CLIENTS / "node_modules" / "graphql-ws").exists():
        return "tests/clients/node_modules is not installed: run `npm ci` in tests/clients"
    return None


# -- the apis the blocks run against ------------------------------------------------------


@dataclass
class Api:
    live: LiveServer
    key: str | None  # with auth required
    media: dict[str, str] = field(default_factory=dict)  # placeholder -> uploaded id

    @property
    def ws_base(self) -> str:
        return self.live.url.replace("http://", "ws://")

    @property
    def init(self) -> dict[str, str]:
        """The connection_init payload."""
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = await self.live.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def job(self, slow: bool) -> str:
        """A job that succeeds at once, or (``slow``) one that runs until canceled."""
        fields: dict[str, Any] = {"prompt": "a readme", "width": 64, "height": 64}
        if slow:
            fields.update(provider="mock", extra={"delayMs": 600_000})
        body = await self.graphql(
            "mutation($i: GenerateImageInput!) { generateImage(input: $i) "
            "{ job { id } userErrors { code } } }",
            {"i": fields},
        )
        assert body["data"]["generateImage"]["userErrors"] == [], body
        return str(body["data"]["generateImage"]["job"]["id"])

    async def token(self, job_id: str) -> str:
        """A watch token following ``job_id``, as a backend mints it."""
        body = await self.graphql(
            "mutation($id: ID!) { createWatchToken(jobId: $id) { token userErrors { code } } }",
            {"id": job_id},
        )
        assert body["data"]["createWatchToken"]["userErrors"] == [], body
        return str(body["data"]["createWatchToken"]["token"])

    async def cancel(self, job_id: str) -> None:
        await self.graphql(
            "mutation($id: ID!) { cancelJob(id: $id) { userErrors { code } } }", {"id": job_id}
        )

    async def upload(self, path: Path) -> str:
        response = await self.live.http.post(
            "/uploads",
            params={"filename": path.name},
            content=path.read_bytes(),
            headers={"content-type": "application/octet-stream", **self.headers},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["media"]["id"])

    async def substitute(self, block: Block, slow_job: bool) -> tuple[str, str | None]:
        """The block's text with the placeholders filled in, and the job made for it."""
        text = block.text.replace(URL, self.live.url).replace(WS_URL, self.ws_base)
        if self.key:
            text = text.replace(KEY, self.key)
        for placeholder, media_id in self.media.items():
            text = text.replace(placeholder, media_id)
        job_id = await self.job(slow_job) if JOB in text else None
        if TOKEN in text:
            text = text.replace(TOKEN, await self.token(job_id or await self.job(False)))
        return (text.replace(JOB, job_id) if job_id else text), job_id


@dataclass
class Apis:
    open: Api
    secured: Api
    files: Path  # the files blocks name, copied into each block's directory

    def of(self, block: Block) -> Api:
        return self.secured if KEY in block.text or TOKEN in block.text else self.open


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def apis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Apis]:
    files = tmp_path_factory.mktemp("files")
    (files / "photo.jpg").write_bytes(jpeg(320, 240))
    make_video(files / "clip.mp4", seconds=1.0, width=160, height=120)

    def settings(**overrides: Any) -> Settings:
        data = tmp_path_factory.mktemp("api")
        values = fast_settings(data_dir=data, shutdown_grace=0.5, rate_limit_per_minute=0)
        return Settings(**{**values, **overrides})

    plain = settings()
    locked = settings(auth="required", secret_key="readme-secret")
    for each in (plain, locked):  # alembic runs its own event loop: not in this one
        await asyncio.to_thread(upgrade, each.effective_database_url)
    fakes = redis_adapter.new_fake_server(), redis_adapter.new_fake_server()
    async with open_runtime(locked, fakes[1]) as runtime:
        _, key = await auth.create_key(runtime.deps, "readme")
    async with (
        start_server(plain, fakes[0], with_worker=True) as open_live,
        start_server(locked, fakes[1], with_worker=True) as secured_live,
    ):
        both = Apis(Api(open_live, None), Api(secured_live, key), files)
        for api in (both.open, both.secured):
            api.media = {
                IMAGE: await api.upload(files / "photo.jpg"),
                VIDEO: await api.upload(files / "clip.mp4"),
            }
        yield both


# -- running a block ----------------------------------------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def explain(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


async def run(*command: str, cwd: Path, env: dict[str, str], stdin: str = "") -> Ran:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def environment(api: Api) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GQL_MEDIA_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["GQL_MEDIA_URL"] = api.live.url
    return env


def json_documents(text: str) -> Iterator[Any]:
    """The JSON objects in ``text``, also when printed back to back (``{..}{..}``)."""
    decoder, index = json.JSONDecoder(), text.find("{")
    while index != -1:
        try:
            document, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        yield document
        index = text.find("{", end)


def problems(value: Any, where: str = "") -> Iterator[str]:
    """Top-level errors and userErrors anywhere in a GraphQL answer."""
    if isinstance(value, dict):
        for name, item in value.items():
            if name in ("errors", "userErrors") and item and not _unconfigured(item):
                yield f"{where}{name}: {item}"
            yield from problems(item, f"{where}{name}.")
    elif isinstance(value, list):
        for item in value:
            yield from problems(item, where)


def _unconfigured(errors: Any) -> bool:
    """The remote providers need an account the test api does not have."""
    return all(e.get("code") == "PROVIDER_NOT_CONFIGURED" for e in errors)


async def run_sh(text: str, api: Api, cwd: Path) -> Ran:
    script, dump = cwd / "block.sh", cwd / "block.env"
    script.write_text(text)
    env = environment(api)
    # The block is sourced as printed; its environment is kept to check what it exports.
    ran = await run(
        "bash", "-e", "-o", "pipefail", "-c", 'source "$0"; env -0 > "$1"', str(script),
        str(dump), cwd=cwd, env=env,
    )  # fmt: skip
    assert ran.code == 0, ran.explain()
    found = [problem for doc in json_documents(ran.out) for problem in problems(doc)]
    assert not found, f"{found}\n{ran.explain()}"
    exported = dict(entry.split("=", 1) for entry in dump.read_text().split("\0") if entry)
    settings = {
        name.removeprefix("GQL_MEDIA_").lower(): value
        for name, value in exported.items()
        if name.startswith("GQL_MEDIA_") and env.get(name) != value
    }
    unknown = sorted(set(settings) - set(Settings.model_fields))
    assert not unknown, f"the block exports variables that are no settings: {unknown}"
    Settings.model_validate(settings)  # refuses a value it cannot take
    return ran


async def run_program(block: Block, text: str, api: Api, cwd: Path) -> Ran:
    if block.lang == "python":
        script = cwd / "example.py"
        script.write_text(text)
        return await run(sys.executable, str(script), cwd=cwd, env=environment(api))
    assert NODE is not None
    # From stdin, an ES module resolves packages from the working directory's node_modules.
    return await run(NODE, "--input-type=module", cwd=CLIENTS, env=environment(api), stdin=text)


async def follow(api: Api, job_id: str) -> list[dict[str, Any]]:
    query = "subscription($id: ID!) { jobUpdated(id: $id) { status error { code message } } }"
    async with graphql_ws(api.live.ws_url, payload=api.init) as ws:
        payloads = await ws.collect(await ws.subscribe(query, {"id": job_id}))
    return payloads


def jobs_made(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for name, item in data.items():
            if name == "job" and isinstance(item, dict) and "id" in item:
                yield str(item["id"])
            else:
                yield from jobs_made(item)


async def run_graphql(text: str, api: Api) -> None:
    [operation] = [
        d for d in graphql.parse(text).definitions if isinstance(d, graphql.OperationDefinitionNode)
    ]
    if operation.operation is graphql.OperationType.SUBSCRIPTION:
        async with graphql_ws(api.live.ws_url, payload=api.init) as ws:
            payloads = await ws.collect(await ws.subscribe(text))
        found = [problem for payload in payloads for problem in problems(payload)]
        assert payloads and not found, (found, payloads)
        [last] = payloads[-1]["data"].values()
        assert last["status"] == "SUCCEEDED", payloads
        return
    body = await api.graphql(text)
    found = list(problems(body))
    assert not found, (found, body)
    for job_id in jobs_made(body["data"]):
        updates = await follow(api, job_id)
        assert updates[-1]["data"]["jobUpdated"]["status"] == "SUCCEEDED", updates


# -- the tests ----------------------------------------------------------------------------


@ON_MODULE_LOOP
@pytest.mark.parametrize("block", params(RUN))
async def test_the_block_runs_as_printed(block: Block, apis: Apis, tmp_path: Path) -> None:
    assert block.lang in RUNNABLE, (
        f"{block.where}: a `{block.lang or 'plain'}` block cannot be run; if it is not "
        "meant to be pasted, put `<!-- not run: <reason> -->` on the line before its fence"
    )
    if block.lang == "ts":
        shown = [path for path in CLIENTS.glob("*.ts") if path.read_text() == block.text]
        assert shown, f"{block.where}: the block is no file of tests/clients"
        return
    if block.lang == "js" and (missing := _node_missing()):
        pytest.skip(missing)
    api = apis.of(block)
    text, job_id = await api.substitute(block, slow_job=block.lang == "sh")
    try:
        if block.lang == "graphql":
            await run_graphql(text, api)
            return
        for file in apis.files.iterdir():
            shutil.copy(file, tmp_path / file.name)
        if block.lang == "sh":
            await run_sh(text, api, tmp_path)
            return
        ran = await run_program(block, text, api, tmp_path)
    finally:
        if job_id and block.lang == "sh":
            await api.cancel(job_id)
    assert ran.code == 0 and not ran.err, ran.explain()
    assert ran.out, ran.explain()
    if block.follows_a_job:  # the last state it printed
        states = [line for line in ran.out.splitlines() if "status" in line]
        assert states and "SUCCEEDED" in states[-1], ran.explain()


@ON_MODULE_LOOP
@pytest.mark.parametrize("block", params(AS_PRINTED))
async def test_a_follow_example_reports_an_unknown_id(
    block: Block, apis: Apis, tmp_path: Path
) -> None:
    if block.lang == "js" and (missing := _node_missing()):
        pytest.skip(missing)
    api = apis.of(block)
    text = block.text.replace(URL, api.live.url).replace(WS_URL, api.ws_base)
    if api.key:
        text = text.replace(KEY, api.key)
    if TOKEN in text:  # a token of another job: the one it names reads as unknown
        text = text.replace(TOKEN, await api.token(await api.job(False)))
    assert JOB in text  # unknown to the api
    ran = await run_program(block, text, api, tmp_path)
    assert ran.code == 0 and "Traceback" not in ran.err, ran.explain()
    assert "NOT_FOUND" in ran.out + ran.err, ran.explain()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_fence_is_found(document: Path) -> None:
    """Also indented ones, which document_blocks does not read: they would go unrun."""
    text = document.read_text()
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) == 2 * len(document_blocks(document))
