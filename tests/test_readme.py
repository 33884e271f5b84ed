"""The documentation documents every setting and every error code, and its links lead
somewhere.

The README's tables of settings and of error codes hold the common ones;
docs/configuration.md and docs/errors.md hold them all. A row in both says the same in both."""

from __future__ import annotations

import re
from pathlib import Path

import graphql
import pytest

from gql_media.errors import ErrorCode
from gql_media.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = ROOT / "docs" / "configuration.md"
ERRORS = ROOT / "docs" / "errors.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTING_ROW = re.compile(r"^\| `(GQL_MEDIA_[A-Z0-9_]+)` \|.*$", re.MULTILINE)
CODE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|.*$", re.MULTILINE)
# the first screen: the title, then "Run it:" and "Test it:", each with its block
RUN_IT = ["python3 -m venv .venv && . .venv/bin/activate", "pip install -e . && gql-media serve"]
TEST_IT = ["python3 -m venv .venv && . .venv/bin/activate", "pip install -e '.[test]' && pytest"]
# what a reader (and the project's pre-stop check) takes for a command: a line of the first
# 40 that starts with one of the tools that set the project up
SET_UP_LINE = re.compile(r"^\s*(\$ )?(pip|python|gql-media|make|uv)\b", re.MULTILINE)
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_the_readme_opens_with_the_commands_to_run_and_to_test_it() -> None:
    """A new user's first screen: right under the title, the commands that install and run
    the service ("Run it") and the ones that install and run the tests ("Test it"), which is
    what .ci/run runs after its install; each block works on its own."""
    top = README.splitlines()[:15]
    assert top[0] == "# gql_media", top
    assert top[2] == "Run it:" and top[9] == "Test it:", top
    assert top[4:8] == ["```sh", *RUN_IT, "```"], top
    assert top[11:15] == ["```sh", *TEST_IT, "```"], top
    assert "not run" not in "\n".join(top), "nothing up there may read as not to be run"
    assert SET_UP_LINE.search("\n".join(README.splitlines()[:40])), "no line starts a command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n.venv/bin/pytest\n" in ci  # the README's test command, after CI's own install


README_MAX_LINES = 510  # "at most about 500": what the user needs; the record is in docs/


def test_the_readme_stays_a_page_for_users() -> None:
    """What it is, quick start, API, configuration and deployment; the engineering record
    (benchmarks, profiles, history) lives in docs/."""
    assert len(README.splitlines()) <= README_MAX_LINES, "move details into docs/"
    headings = re.findall(r"^## (.+)$", README, re.MULTILINE)
    assert not {"Performance", "Benchmarks", "History"} & set(headings), headings


def rows(pattern: re.Pattern[str], text: str) -> dict[str, str]:
    """The rows of the tables in ``text`` that ``pattern`` matches, by what they start with."""
    return {match[1]: match[0] for match in pattern.finditer(text)}


def setting_rows(text: str) -> dict[str, str]:
    return rows(SETTING_ROW, text)


def code_rows(text: str) -> dict[str, str]:
    """The rows of the table of error codes in ``text``: in the README, its section's."""
    section = text[text.index("## Error codes") :] if "## Error codes" in text else text
    return rows(CODE_ROW, section.split("\n## ", 1)[0])


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    variable = f"GQL_MEDIA_{name.upper()}"
    assert variable in setting_rows(CONFIGURATION.read_text()), (
        f"`{variable}` has no row in docs/configuration.md"
    )


def test_a_setting_in_the_readme_reads_as_in_the_full_table() -> None:
    full = setting_rows(CONFIGURATION.read_text())
    common = setting_rows(README)
    assert common, "the README's configuration table is gone"
    differ = {name: row for name, row in common.items() if full.get(name) != row}
    assert not differ, f"rows of the README that docs/configuration.md has otherwise: {differ}"
    unknown = {name.removeprefix("GQL_MEDIA_").lower() for name in full} - set(
        Settings.model_fields
    )
    assert not unknown, f"documented settings the service does not have: {unknown}"


@pytest.mark.parametrize("code", sorted(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert code.value in code_rows(ERRORS.read_text()), (
        f"`{code.value}` has no row in docs/errors.md"
    )


def test_an_error_code_in_the_readme_reads_as_in_the_full_table() -> None:
    full, common = code_rows(ERRORS.read_text()), code_rows(README)
    assert common, "the README's table of error codes is gone"
    differ = {code: row for code, row in common.items() if full.get(code) != row}
    assert not differ, f"rows of the README that docs/errors.md has otherwise: {differ}"
    unknown = set(full) - {code.value for code in ErrorCode}
    assert not unknown, f"documented codes the service does not have: {unknown}"


def test_the_graphql_error_code_enum_lists_the_documented_codes() -> None:
    """``ErrorCode`` of ``schema.graphql`` (what typed clients build from), the Python enum
    and docs/errors.md name the same codes."""
    enum = graphql.build_schema((ROOT / "schema.graphql").read_text()).get_type("ErrorCode")
    assert isinstance(enum, graphql.GraphQLEnumType)
    in_schema = set(enum.values)
    assert in_schema == {code.value for code in ErrorCode}
    assert in_schema == set(code_rows(ERRORS.read_text()))


def anchors(document: Path) -> set[str]:
    """The anchors GitHub makes of a document's headings."""
    headings = re.findall(r"^#+ (.+)$", document.read_text(), re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings
    }


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_link_leads_somewhere(document: Path) -> None:
    """Relative links name a file of the repository, and an anchor a heading of it."""
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # another site
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{document.name}: links that lead nowhere: {broken}"


def test_the_operation_tables_are_what_the_schema_states() -> None:
    from gql_media.services.operations.docs import COMMAND, generated_blocks, generated_sections

    media = (ROOT / "docs" / "media.md").read_text()
    assert generated_blocks(media) == generated_sections(), (
        f"the operation tables of docs/media.md are stale: run `{COMMAND}`"
    )
