"""The README documents every setting and every error code."""

from __future__ import annotations

from pathlib import Path

import pytest

from gql_media.errors import ErrorCode
from gql_media.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`GQL_MEDIA_{name.upper()}`" in README


@pytest.mark.parametrize("code", sorted(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"| `{code.value}` |" in README


def test_the_operation_tables_are_what_the_schema_states() -> None:
    from gql_media.services.operations.docs import COMMAND, generated_blocks, readme_sections

    assert generated_blocks(README) == readme_sections(), (
        f"the README's operation tables are stale: run `{COMMAND}`"
    )
