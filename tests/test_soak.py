"""The soak mode runs (tiny here, so it cannot rot): jobs survive random worker kills."""

from __future__ import annotations

import pytest

from tests import soak
from tests.conftest import INTEGRATION


@pytest.mark.integration
@pytest.mark.skipif(not INTEGRATION, reason="needs PostgreSQL and Redis")
@pytest.mark.timeout(120)
def test_soak_with_random_worker_kills(capsys: pytest.CaptureFixture[str]) -> None:
    assert soak.main(["--jobs", "20", "--workers", "2", "--kill-interval", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "problems        0" in out and "SUCCEEDED     20" in out
