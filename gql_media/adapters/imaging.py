"""Pillow work for the built-in offline generator. CPU-bound: call it from a thread."""

from __future__ import annotations

import colorsys
import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFilter

from gql_media.domain import OutputFormat


def rng_for(prompt: str, seed: int, width: int, height: int) -> random.Random:
    """A generator that depends only on the prompt, the seed and the size."""
    digest = hashlib.sha256(f"{seed}\0{width}x{height}\0{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _colour(rng: random.Random, alpha: int | None = None) -> tuple[int, ...]:
    hue, sat, val = rng.random(), 0.45 + 0.5 * rng.random(), 0.45 + 0.55 * rng.random()
    rgb = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val))
    return rgb if alpha is None else (*rgb, alpha)


# a vertical ramp from 0 to 255, one pixel wide: the mask that blends a gradient's colours
_RAMP = Image.linear_gradient("L").crop((0, 0, 1, 256))


class Painting:
    """A deterministic abstract picture painted in layers, one layer per step."""

    def __init__(self, prompt: str, seed: int, width: int, height: int, steps: int) -> None:
        self.rng = rng_for(prompt, seed, width, height)
        self.width, self.height, self.steps = width, height, max(steps, 2)
        self.image = Image.new("RGB", (width, height))

    def paint_step(self, step: int) -> None:
        """Step 0 lays a gradient sky, the middle steps add shapes, the last one softens."""
        if step == 0:
            self._gradient()
        elif step == self.steps - 1:
            self._finish()
        else:
            self._shapes(step)

    def _gradient(self) -> None:
        top, bottom = _colour(self.rng), _colour(self.rng)
        column = Image.composite(
            Image.new("RGB", _RAMP.size, bottom), Image.new("RGB", _RAMP.size, top), _RAMP
        )
        self.image = column.resize((self.width, self.height), Image.Resampling.BICUBIC)

    def _shapes(self, step: int) -> None:
        overlay = Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        scale = min(self.width, self.height)
        size = scale * (0.5 / step + 0.05)
        for _ in range(3 + step * 2):
            x, y = self.rng.uniform(0, self.width), self.rng.uniform(0, self.height)
            r = self.rng.uniform(0.3, 1.0) * size
            fill = _colour(self.rng, alpha=self.rng.randint(60, 170))
            if self.rng.random() < 0.5:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            else:
                corners = self.rng.randint(3, 6)
                points = [
                    (x + self.rng.uniform(-r, r), y + self.rng.uniform(-r, r))
                    for _ in range(corners)
                ]
                draw.polygon(points, fill=fill)
        self.image = Image.alpha_composite(self.image.convert("RGBA"), overlay).convert("RGB")

    def _finish(self) -> None:
        radius = max(self.width, self.height) / 400
        soft = self.image.filter(ImageFilter.GaussianBlur(radius))
        self.image = Image.blend(self.image, soft, 0.5).filter(ImageFilter.DETAIL)


def encode(image: Image.Image, output_format: OutputFormat) -> bytes:
    buffer = io.BytesIO()
    if output_format is OutputFormat.JPEG:
        image.save(buffer, "JPEG", quality=90, optimize=True)
    elif output_format is OutputFormat.WEBP:
        image.save(buffer, "WEBP", quality=85)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()
