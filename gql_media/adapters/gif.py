"""Counting a GIF's frames from its block structure, stopping at a bound.

Pillow counts a GIF's frames by walking all of them, at a cost per frame that grows with the
canvas: a 200 MB upload of one-pixel frames on a large canvas would keep a thread busy for
a minute and a half before any bound is checked. This walk reads only the block headers
and stops as soon as the count passes the bound, so refusing such a file costs no more than
reading the frames the bound allows.
"""

from __future__ import annotations

import mmap
from pathlib import Path

_TRAILER, _EXTENSION, _IMAGE = 0x3B, 0x21, 0x2C


def count_frames(path: Path, stop_after: int) -> int | None:
    """The image descriptors (frames) of the GIF at ``path``, counting no further than
    ``stop_after`` + 1; None when the file is not a GIF this walk understands (the caller
    then asks Pillow)."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:6] not in (b"GIF87a", b"GIF89a") or len(m) < 13:
            return None
        position = 13 + _colour_table(m[10])
        frames = 0
        while position < len(m):
            block = m[position]
            if block == _TRAILER:
                return frames
            if block == _EXTENSION:
                position = _skip_sub_blocks(m, position + 2)
            elif block == _IMAGE:
                frames += 1
                if frames > stop_after or position + 10 >= len(m):
                    return frames
                position += 10 + _colour_table(m[position + 9])
                position = _skip_sub_blocks(m, position + 1)  # past the LZW code size
            else:
                return None
        return frames  # truncated: the frames so far


def _colour_table(flags: int) -> int:
    """Bytes of the colour table that a descriptor's ``flags`` announce."""
    return 3 * (2 << (flags & 7)) if flags & 0x80 else 0


def _skip_sub_blocks(m: mmap.mmap, position: int) -> int:
    """The position after a chain of data sub-blocks (each a size byte, then that many
    bytes; a size of 0 ends the chain)."""
    while position < len(m) and (size := m[position]):
        position += size + 1
    return position + 1
