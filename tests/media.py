"""Real media made by the tests: pictures with known pixels, animations, and a short H.264
video with an AAC sound track, so assertions can check pixels, sizes and durations."""

from __future__ import annotations

import io
import math
import random
import struct
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame
from PIL import Image

QUADRANTS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))


def quadrants(width: int, height: int) -> Image.Image:
    """Red, green / blue, white quadrants: where each colour lands shows orientation."""
    image = Image.new("RGB", (width, height))
    w, h = width // 2, height // 2
    boxes = ((0, 0, w, h), (w, 0, width, h), (0, h, w, height), (w, h, width, height))
    for box, colour in zip(boxes, QUADRANTS, strict=True):
        image.paste(colour, box)
    return image


def jpeg(width: int = 640, height: int = 480, orientation: int | None = None) -> bytes:
    """A quadrant JPEG, optionally carrying an EXIF orientation."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    quadrants(width, height).save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


def png_with_alpha(width: int = 200, height: int = 100) -> bytes:
    """Opaque red on the left half, fully transparent on the right half."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def animated_gif(frames: int = 4, size: tuple[int, int] = (120, 80)) -> bytes:
    """Frames of solid colours (red, green, blue, ...), 100 ms each."""
    colours = [QUADRANTS[i % len(QUADRANTS)] for i in range(frames)]
    images = [Image.new("RGB", size, colour) for colour in colours]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def encoded(image: Image.Image, format: str, **options: object) -> bytes:
    """``image`` saved as ``format`` with Pillow's save ``options``."""
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def animation(
    colours: Sequence[tuple[int, ...]],
    durations: Sequence[int],
    size: tuple[int, int] = (120, 80),
    format: str = "GIF",
) -> bytes:
    """One solid frame per colour, each shown for its duration in ms."""
    mode = "RGBA" if len(colours[0]) == 4 else "RGB"
    images = [Image.new(mode, size, colour) for colour in colours]
    return encoded(
        images[0],
        format,
        save_all=True,
        append_images=images[1:],
        duration=list(durations),
        loop=0,
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int, pixel_data: bool = True) -> bytes:
    """A black 1-bit PNG written row by row, so a few KB can declare a huge picture; without
    ``pixel_data`` it is the header alone."""
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))]
    if pixel_data:
        compressor = zlib.compressobj(9)
        row = b"\x00" * (1 + (width + 7) // 8)  # filter type, then 8 pixels a byte
        data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
        chunks.append(_png_chunk(b"IDAT", data))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def quadrant_video(path: Path, width: int = 64, height: int = 48, frames: int = 10) -> Path:
    """An H.264 MP4 (10 fps, no sound) whose every frame shows ``quadrants``."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        picture = quadrants(width, height)
        for index in range(frames):
            frame = VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def rotate_video(path: Path, degrees: int) -> Path:
    """Make players turn the first track of an MP4 ``degrees`` clockwise, as phones do: its
    ``tkhd`` display matrix is rewritten in place."""
    one, minus_one, w = 0x10000, 0xFFFF0000, 0x40000000
    matrices = {
        0: (one, 0, 0, 0, one, 0, 0, 0, w),
        90: (0, one, 0, minus_one, 0, 0, 0, 0, w),
        180: (minus_one, 0, 0, 0, minus_one, 0, 0, 0, w),
        270: (0, minus_one, 0, one, 0, 0, 0, 0, w),
    }
    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd")
    # version 1 boxes carry 64-bit times: 12 more bytes before the matrix
    start = box + 4 + (52 if data[box + 4] == 1 else 40)
    data[start : start + 36] = struct.pack(">9I", *matrices[degrees])
    path.write_bytes(bytes(data))
    return path


def make_video(
    path: Path,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 240,
    fps: int = 24,
    audio: bool = True,
) -> Path:
    """An H.264 MP4 whose frames go from black to white, with a 440 Hz AAC tone."""
    rate = 44_100
    with av.open(str(path), "w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = container.add_stream("aac", rate=rate) if audio else None
        if astream is not None:
            astream.layout = "mono"
        total = round(seconds * fps)
        for index in range(total):
            shade = round(255 * index / max(total - 1, 1))
            frame = VideoFrame.from_image(Image.new("RGB", (width, height), (shade,) * 3))
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            chunk = 1024
            for start in range(0, round(seconds * rate), chunk):
                samples = min(chunk, round(seconds * rate) - start)
                frame = AudioFrame(format="s16", layout="mono", samples=samples)
                tone = b"".join(
                    round(8000 * math.sin(2 * math.pi * 440 * (start + i) / rate)).to_bytes(
                        2, "little", signed=True
                    )
                    for i in range(samples)
                )
                frame.planes[0].update(tone)
                frame.sample_rate, frame.pts = rate, start
                frame.time_base = Fraction(1, rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
    return path


def sparse_gif(width: int, height: int, frames: int) -> bytes:
    """A GIF whose ``frames`` each paint one pixel of a ``width`` x ``height`` canvas: a few
    bytes a frame, while a decoder makes a whole canvas of each."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\0\0\0"
    body = b"".join(
        b"!\xf9\x04\x00\x01\x00\x00\x00"  # 10 ms each
        + b","
        + struct.pack("<HHHHB", index % width, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # one pixel of colour 0, LZW-coded
        for index in range(frames)
    )
    return header + loop + body + b";"


def mjpeg_mkv(sizes: Sequence[int], declared: int | None = None) -> bytes:
    """A Matroska file of square MJPEG frames, one a second, sized as ``sizes`` says (0: a
    frame no decoder can read); its header declares ``declared`` (default: the first size),
    whatever the frames are."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=1)
        stream.width = stream.height = declared or sizes[0]
        stream.pix_fmt = "yuvj420p"
        for index, size in enumerate(sizes):
            picture = Image.new("RGB", (size, size), (200, 40, 40)) if size else None
            packet = av.Packet(encoded(picture, "JPEG") if picture else b"\xff\xd8" + bytes(64))
            packet.stream, packet.pts, packet.dts = stream, index, index
            packet.time_base = Fraction(1, 1)
            container.mux(packet)
    return out.getvalue()


# -- damaged files: valid headers, broken data ------------------------------------------


def damaged_png(width: int = 64, height: int = 48) -> bytes:
    """A quadrant PNG with an intact signature, IHDR and IEND, whose IDAT (with a correct
    CRC, so only decoding finds it) holds bytes that are not a zlib stream."""
    good = encoded(quadrants(width, height), "PNG")
    start = good.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", good[start : start + 4])
    garbage = bytes((index * 37 + 11) % 256 for index in range(length))
    return good[:start] + _png_chunk(b"IDAT", garbage) + good[start + 12 + length :]


def truncated_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A quadrant JPEG cut off halfway through its compressed scan (no end marker)."""
    whole = jpeg(width, height)
    scan = whole.index(b"\xff\xda")
    return whole[: scan + (len(whole) - scan) // 2]


def gif_with_broken_frame(frames: int = 5, broken: int = 2) -> bytes:
    """An animated GIF whose frame ``broken`` (counted from 0) has LZW codes that name no
    table entry; the frames before and after it are sound."""
    data = bytearray(animated_gif(frames))
    flags = data[10]
    position = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    frame = 0
    while data[position] != 0x3B:
        if data[position] == 0x21:  # an extension: its label, then sub-blocks
            position += 2
        else:  # an image descriptor, its colour table, then the LZW code size
            local = data[position + 9]
            position += 11 + (3 * (2 << (local & 7)) if local & 0x80 else 0)
            if frame == broken:
                size = data[position]
                data[position + 1 : position + 1 + size] = b"\xff" * size
            frame += 1
        while data[position]:
            position += data[position] + 1
        position += 1
    return bytes(data)


def packets(path: Path, kind: str) -> list[tuple[float, int, int]]:
    """(time, file offset, size) of every packet of the first ``kind`` stream of ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.get(**{kind: 0})[0]
        return [
            (float(packet.pts * packet.time_base), packet.pos, packet.size)
            for packet in container.demux(stream)
            if packet.size and packet.pts is not None and packet.time_base is not None
        ]


def damage(path: Path, kind: str, start: float, end: float, flip: bool = False) -> Path:
    """Damage, in place, the packets of ``path``'s first ``kind`` stream that start between
    ``start`` and ``end`` seconds, leaving their first bytes (headers) and the container
    intact: garbage over the rest of each, or with ``flip`` one byte changed in the middle
    (damage a decoder can paint over)."""
    data = bytearray(path.read_bytes())
    hit = 0
    for time, position, size in packets(path, kind):
        if start <= time < end and size > 16:
            hit += 1
            if flip:
                data[position + size // 2] ^= 0x55
            else:
                data[position + 8 : position + size] = random.Random(position).randbytes(size - 8)
    assert hit, f"no {kind} packet between {start} and {end} s"
    path.write_bytes(bytes(data))
    return path


def tone(path: Path, format: str, codec: str, seconds: float = 3.0, rate: int = 44_100) -> Path:
    """A mono 440 Hz tone encoded with ``codec`` in a ``format`` file."""
    with av.open(str(path), "w", format=format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        total, chunk = round(seconds * rate), 1152
        for start in range(0, total, chunk):
            samples = min(chunk, total - start)
            frame = AudioFrame(format="s16", layout="mono", samples=samples)
            frame.planes[0].update(
                b"".join(
                    round(8000 * math.sin(2 * math.pi * 440 * (start + i) / rate)).to_bytes(
                        2, "little", signed=True
                    )
                    for i in range(samples)
                )
            )
            frame.sample_rate, frame.pts = rate, start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
