"""Real media made by the tests: pictures with known pixels, animations, and a short H.264
video with an AAC sound track, so assertions can check pixels, sizes and durations."""

from __future__ import annotations

import io
import math
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
