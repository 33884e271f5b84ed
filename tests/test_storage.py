"""Local storage: keys stay inside the root, writes are whole files, directories come back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gql_media.adapters.storage import SCRATCH, LocalStorage
from gql_media.errors import UserError


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "media")


async def test_put_read_delete(storage: LocalStorage) -> None:
    await storage.put("jobs/ab/one-0.png", b"one")
    await storage.put("jobs/ab/two-0.png", b"two")
    assert await storage.exists("jobs/ab/one-0.png")
    async with storage.local_copy("jobs/ab/two-0.png") as path:
        assert path.read_bytes() == b"two"
    await storage.delete("jobs/ab/one-0.png")
    assert not await storage.exists("jobs/ab/one-0.png")
    assert list((storage.root / SCRATCH).iterdir()) == []  # every scratch file was moved


@pytest.mark.parametrize("key", ["../out.png", "/etc/passwd", "jobs/../../out.png", ""])
async def test_keys_that_leave_the_root_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(UserError):
        await storage.put(key, b"x")


async def test_a_directory_linked_outside_the_root_is_refused(
    storage: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir(parents=True)
    (storage.root / "jobs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError):
        await storage.put("jobs/ab/x.png", b"x")
    assert list(outside.iterdir()) == []


async def test_directories_removed_between_writes_are_made_again(storage: LocalStorage) -> None:
    await storage.put("jobs/ab/one-0.png", b"one")
    shutil.rmtree(storage.root / "jobs")
    shutil.rmtree(storage.root / SCRATCH)
    await storage.put("jobs/ab/two-0.png", b"two")
    assert (storage.root / "jobs/ab/two-0.png").read_bytes() == b"two"
    source = storage.scratch_path()
    source.write_bytes(b"three")
    shutil.rmtree(storage.root / "jobs")
    await storage.put_file("jobs/cd/three-0.png", source)
    assert (storage.root / "jobs/cd/three-0.png").read_bytes() == b"three"


async def test_a_failed_write_leaves_no_scratch_file(storage: LocalStorage) -> None:
    await storage.put("jobs/ab/dir-0.png/inner", b"x")  # a directory named like the file
    with pytest.raises(OSError):
        await storage.put("jobs/ab/dir-0.png", b"y")
    assert list((storage.root / SCRATCH).iterdir()) == []


async def test_a_missing_source_is_not_papered_over(storage: LocalStorage) -> None:
    with pytest.raises(FileNotFoundError):
        await storage.put_file("jobs/ab/x.png", storage.scratch_path())
    assert not (storage.root / "jobs/ab").exists()
