"""Image paths: a large JPEG made smaller through ``image_ops.process_image`` and through plain
Pillow (``Image.open(...).resize(...)``, then the same encoder), in this process; and through
``image_ops.process_image`` in a warm child of the process pool a worker runs processing jobs
in (its limits as the defaults set them), so the difference is what isolation costs a job:
sending the task and receiving the encoded result.

This measures the machine the bench runs on, not the deployment: run it where the workers
run. Both paths read the same file and encode to the same format and quality; the service
also applies EXIF orientation, strips metadata and writes optimized JPEG.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from gql_media.adapters import image_ops
from gql_media.adapters.isolation import Limits, ProcessPool
from gql_media.bench.options import Options
from gql_media.bench.stats import Report, Row
from gql_media.settings import Settings

MAX_PIXELS = 200_000_000


def make_jpeg(megapixels: float, seed: int = 7) -> tuple[bytes, tuple[int, int]]:
    """A photo-like 3:2 JPEG: soft shapes, gradients and fine grain, so it compresses and
    decodes like a camera picture rather than like noise or a flat colour."""
    width = max(64, round(math.sqrt(megapixels * 1_000_000 * 3 / 2)))
    height = max(64, round(width * 2 / 3))
    rng = random.Random(seed)
    sketch = Image.linear_gradient("L").resize((width // 8, height // 8)).convert("RGB")
    draw = ImageDraw.Draw(sketch)
    for _ in range(60):
        x, y = rng.randrange(sketch.width), rng.randrange(sketch.height)
        r = rng.randrange(4, max(5, sketch.width // 6))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    sketch = sketch.filter(ImageFilter.GaussianBlur(3))
    picture = sketch.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 24).convert("RGB")
    picture = Image.blend(picture, grain, 0.12)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), (width, height)


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _plain(path: Path, longest: int, fmt: str, quality: int) -> int:
    with Image.open(path) as image:
        small = image.resize(_fit(image.size, longest))
    buffer = io.BytesIO()
    small.save(buffer, fmt, quality=quality)
    return len(buffer.getvalue())


def _variant(operation: image_ops.Operation, fmt: str, quality: int) -> image_ops.Variant:
    return image_ops.Variant("out", (operation,), image_ops.Output(format=fmt, quality=quality))


def _service(path: Path, operation: image_ops.Operation, fmt: str, quality: int) -> int:
    (result,) = image_ops.process_image(path, [_variant(operation, fmt, quality)], MAX_PIXELS)
    return len(result.data)


def _pool() -> ProcessPool:
    """One child with the limits a worker gives its children by default."""
    megabytes = int(Settings.model_fields["process_memory_limit_mb"].default)
    return ProcessPool(1, Limits(memory_bytes=megabytes * 1024 * 1024, cpu_seconds=3600))


async def _isolated(
    pool: ProcessPool, path: Path, case: tuple[image_ops.Operation, str, int], repeat: int
) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` runs in the pool's warm child, and the output size."""
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        (result,) = await pool.run(image_ops.process_image, path, [_variant(*case)], MAX_PIXELS)
        times.append((time.perf_counter() - started) * 1000)
        size = len(result.data)
    return statistics.median(times), size


def _time(action: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` runs, and the output size of the last."""
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        size = action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


Case = tuple[str, image_ops.Operation, int, str, int]


def _cases() -> list[Case]:
    return [
        ("thumbnail 512 px JPEG", image_ops.Thumbnail(512), 512, "JPEG", 85),
        (
            "2048 px WEBP",
            image_ops.Resize(width=2048, height=2048, fit="inside"),
            2048,
            "WEBP",
            80,
        ),
    ]


def _measure(options: Options, path: Path) -> list[dict[str, Any]]:
    results = []
    for name, operation, longest, fmt, quality in _cases():
        service_ms, service_bytes = _time(
            functools.partial(_service, path, operation, fmt, quality), options.image_repeat
        )
        plain_ms, plain_bytes = _time(
            functools.partial(_plain, path, longest, fmt, quality), options.image_repeat
        )
        results.append(
            {
                "name": name,
                "service_ms": round(service_ms, 1),
                "pillow_ms": round(plain_ms, 1),
                "service_bytes": service_bytes,
                "pillow_bytes": plain_bytes,
            }
        )
    return results


async def _measure_isolated(options: Options, path: Path, results: list[dict[str, Any]]) -> None:
    pool = _pool()
    try:
        warm_up = _variant(image_ops.Thumbnail(64), "JPEG", 85)
        await pool.run(image_ops.process_image, path, [warm_up], MAX_PIXELS)  # the child starts
        for result, (_, operation, _, fmt, quality) in zip(results, _cases(), strict=True):
            isolated_ms, isolated_bytes = await _isolated(
                pool, path, (operation, fmt, quality), options.image_repeat
            )
            result["isolated_bytes"] = isolated_bytes
            result["isolated_ms"] = round(isolated_ms, 1)
    finally:
        await pool.aclose()


async def run_images(options: Options, report: Report) -> None:
    data, size = await asyncio.to_thread(make_jpeg, options.image_megapixels)
    with tempfile.TemporaryDirectory(prefix="gql-media-bench-img-") as tmp:
        path = Path(tmp) / "source.jpg"
        path.write_bytes(data)
        results = await asyncio.to_thread(_measure, options, path)
        await _measure_isolated(options, path, results)
    details: dict[str, Any] = {
        "source": {"width": size[0], "height": size[1], "bytes": len(data)},
        "repeat": options.image_repeat,
        "ops": results,
    }
    megapixels = size[0] * size[1] / 1e6
    rows = [
        Row(
            f"image {op['name']}",
            f"{megapixels:.0f} MP",
            f"{op['service_ms']:,.0f} ms/op (service)",
            None,
            None,
            f"plain Pillow open+resize {op['pillow_ms']:,.0f} ms/op; in a worker's child "
            f"process {op['isolated_ms']:,.0f} ms/op",
        )
        for op in results
    ]
    report.add("images", details, rows)
