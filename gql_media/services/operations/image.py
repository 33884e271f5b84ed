"""The operations of processImage and the variants they make, each defined once.

Each class is what an entry of a variant's ``operations`` holds once read; ``to_adapter``
turns it into what ``adapters.image_ops`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gql_media.adapters import image_ops
from gql_media.adapters.image_ops import DEFAULT_QUALITY, MAX_FRAMES, Fit, ImageFormat, Position
from gql_media.services.operations.fields import (
    COLOUR,
    MAX_SIDE,
    NAME_RULE,
    Choices,
    MediaId,
    Model,
    operation,
    param,
)

IMAGE_FORMAT = Choices.of("ImageFormat", "Encoding of processed images.", ImageFormat)
FIT = Choices.of(
    "FitMode",
    "How a resize fits the box.",
    Fit,
    contain="Fit inside the box keeping the aspect ratio; with both sides given, pad to "
    "exactly the box (transparent, or white in JPEG).",
    cover="Fill the box keeping the aspect ratio; crop the overflow, centred.",
    fill="Exactly the box; the aspect ratio is not kept.",
    inside="Fit inside the box keeping the aspect ratio, no padding; never enlarges, "
    "even with upscale.",
)
POSITION = Choices.of("Position", "Where a watermark goes.", Position)
# media ids of watermarks → their files, for ``to_adapter``
Files = Callable[[str], Path]


def _side(meaning: str, **kwargs: Any) -> Any:
    return param(meaning, "pixels", 1, MAX_SIDE, **kwargs)


def _position() -> Any:
    return param("Where the mark goes", choices=POSITION, default="bottom-right")


def _margin() -> Any:
    return param("Distance from the picture's edges", "pixels", 0, 10_000, default=16)


def _opacity() -> Any:
    return param("Opacity of the mark", "", 0, 1, note="0 is invisible, 1 opaque.", default=0.5)


class ImageOperation(Model):
    """One step of a variant's pipeline."""

    __slots__ = ()

    def to_adapter(self, files: Files) -> image_ops.Operation:
        raise NotImplementedError


@operation("resize", "Scale into a box; one of width and height may be omitted.")
@dataclass(frozen=True, slots=True, kw_only=True)
class Resize(ImageOperation):
    width: int | None = _side("Width of the box", default=None)
    height: int | None = _side("Height of the box", default=None)
    fit: Fit = param("How the picture fits the box", choices=FIT, default="contain")
    upscale: bool = param("Allow making the picture larger than the source", default=False)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.width is None and self.height is None:
            yield "", "resize needs a width, a height or both"

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.Resize(self.width, self.height, self.fit, self.upscale)


@operation("thumbnail", "Shrink so that the longest edge is at most `size`; never enlarges.")
@dataclass(frozen=True, slots=True, kw_only=True)
class Thumbnail(ImageOperation):
    size: int = _side("Longest edge")

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.Thumbnail(self.size)


@operation(
    "crop",
    "Cut out a rectangle, which must lie wholly inside the picture (PROCESSING_FAILED otherwise).",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class Crop(ImageOperation):
    left: int = param("Left edge of the rectangle", "pixels", 0, MAX_SIDE, default=0)
    top: int = param("Top edge of the rectangle", "pixels", 0, MAX_SIDE, default=0)
    width: int = _side("Width of the rectangle")
    height: int = _side("Height of the rectangle")

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.Crop(self.left, self.top, self.width, self.height)


@operation("rotate", "Turn the picture clockwise; quarter turns that expand are lossless.")
@dataclass(frozen=True, slots=True, kw_only=True)
class Rotate(ImageOperation):
    degrees: float = param(
        "Angle to turn clockwise",
        "degrees",
        -360,
        360,
        note="A negative angle turns counter-clockwise.",
    )
    expand: bool = param(
        "Grow the canvas to hold the whole turned picture; false keeps the size and cuts "
        "off the corners",
        default=True,
    )
    background: str = param(
        f"Colour of the corners the turn uncovers, {COLOUR}",
        default="#00000000",
        max_chars=64,
        null_means_default=True,
    )

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.Rotate(self.degrees, self.expand, self.background)


@operation("autoOrient", "Apply the EXIF orientation; every source is turned upright first anyway.")
@dataclass(frozen=True, slots=True, kw_only=True)
class AutoOrient(ImageOperation):
    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.AutoOrient()


@operation("textWatermark", "Draw text over the picture in the bundled font.")
@dataclass(frozen=True, slots=True, kw_only=True)
class TextWatermark(ImageOperation):
    text: str = param("The text", max_chars=200)
    position: Position = _position()
    margin: int = _margin()
    opacity: float = _opacity()
    scale: float = param(
        "Size of the font as a fraction of the picture's height",
        "",
        0.005,
        1,
        note="The font is at least 8 pixels.",
        default=0.05,
    )
    color: str = param(f"Colour of the text, {COLOUR}", default="#ffffff", max_chars=64)

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.TextWatermark(
            self.text, self.position, self.margin, self.opacity, self.scale, self.color
        )


@operation("imageWatermark", "Draw an uploaded image over the picture.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ImageWatermark(ImageOperation):
    media_id: MediaId = param("An uploaded image")
    position: Position = _position()
    margin: int = _margin()
    opacity: float = _opacity()
    scale: float = param(
        "Width of the mark as a fraction of the picture's width", "", 0.01, 1, default=0.2
    )

    def to_adapter(self, files: Files) -> image_ops.Operation:
        return image_ops.ImageWatermark(
            files(self.media_id), self.position, self.margin, self.opacity, self.scale
        )


IMAGE_MODELS: tuple[type[ImageOperation], ...] = (
    Resize,
    Thumbnail,
    Crop,
    Rotate,
    AutoOrient,
    TextWatermark,
    ImageWatermark,
)
IMAGE_OPERATIONS = tuple(model.spec for model in IMAGE_MODELS)

_QUALITY = ", ".join(f"{q} for {f}" for f, q in DEFAULT_QUALITY.items())


@operation(
    "variant", "One named output made from the source by its operations, in order, then encoded."
)
@dataclass(frozen=True, slots=True, kw_only=True)
class Variant(Model):
    """One named output of a processImage job; ``operations`` are read entry by entry."""

    name: str = param(f"Name of the output: {NAME_RULE}")
    operations: tuple[ImageOperation, ...] = ()
    format: ImageFormat | None = param(
        "Encoding of the output",
        choices=IMAGE_FORMAT,
        default_note="the source's format when it is one of these, else PNG; an animation "
        "keeps its format when it is WEBP or PNG, else it becomes WEBP",
        default=None,
    )
    quality: int | None = param(
        "Encoder quality",
        "",
        1,
        100,
        note="For PNG, below 50 compresses harder.",
        default_note=_QUALITY,
        default=None,
    )
    progressive: bool = param("Write a progressive JPEG (other formats ignore it)", default=False)
    strip_metadata: bool = param(
        "Remove EXIF, GPS and XMP metadata; the colour profile is kept either way", default=True
    )

    def to_adapter(self, files: Files) -> image_ops.Variant:
        output = image_ops.Output(self.format, self.quality, self.progressive, self.strip_metadata)
        return image_ops.Variant(
            self.name, tuple(op.to_adapter(files) for op in self.operations), output
        )

    def media_ids(self) -> set[str]:
        """The uploads the variant's watermarks draw."""
        return {op.media_id for op in self.operations if isinstance(op, ImageWatermark)}


VARIANT = Variant.spec
ANIMATION = (
    f"An animated GIF, WEBP or PNG (at most {MAX_FRAMES} frames, TOO_MANY_PIXELS past that) "
    "stays animated when written as WEBP or PNG, every frame going through the operations; "
    "JPEG and AVIF take its first frame."
)
