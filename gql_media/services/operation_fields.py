"""What each field of processImage and processVideo means, written once.

Every field's meaning, unit, range and default is stated here and nowhere else: the GraphQL
inputs (``api/media_types.py``) take their descriptions and defaults from it, the validation
in ``services.processing`` its ranges, defaults and messages, and the README its tables of
operations. ``python -m gql_media.services.operation_fields README.md`` rewrites those
tables; a test fails when they differ from what is written here.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from gql_media.adapters.image_ops import DEFAULT_QUALITY, MAX_FRAMES, OUTPUT_FORMATS, Position

MAX_SIDE = 100_000  # pixels: any side, offset or box an image operation takes
NAME_RULE = "1 to 64 letters, digits, `-` or `_`"


def number_text(value: float) -> str:
    """``value`` as the schema, the README and messages print it: 512000, 0.005, -360."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def enum_name(value: str) -> str:
    """The GraphQL name of an enum value that the service stores as ``value``."""
    return value.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Param:
    """One field of an operation.

    ``default`` is what an omitted value means and what the schema shows; None with a
    ``default_note`` means it depends on something, which the note says.
    """

    name: str
    meaning: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    default: Any = None
    default_note: str = ""
    note: str = ""  # a sentence or two after the range
    required: bool = False
    max_chars: int | None = None
    choices: tuple[tuple[str, str], ...] = ()  # (stored value, description or "")

    @property
    def range(self) -> str:
        """The allowed values in words, e.g. "from 8000 to 512000 bits per second"."""
        if self.low is not None and self.high is not None:
            unit = f" {self.unit}" if self.unit else ""
            return f"from {number_text(self.low)} to {number_text(self.high)}{unit}"
        if self.max_chars is not None:
            return f"at most {self.max_chars} characters"
        return ""

    @property
    def description(self) -> str:
        """The field's description in the schema (whose enums describe their own values)."""
        return self.sentences(with_choices=False)

    def sentences(self, *, with_choices: bool) -> str:
        """Meaning and range, the values allowed (those described one by one only
        ``with_choices``), then the note and the default."""
        parts = [f"{self.meaning}, {self.range}." if self.range else f"{self.meaning}."]
        names = [enum_name(value) for value in self.values]
        if any(about for _, about in self.choices):
            if with_choices:
                parts += [
                    f"`{n}`: {about}" for n, (_, about) in zip(names, self.choices, strict=True)
                ]
        elif len(names) > 1:
            parts.append(f"One of {', '.join(names[:-1])} or {names[-1]}.")
        if self.note:
            parts.append(self.note)
        if self.default_note:
            parts.append(f"Default: {self.default_note}.")
        return " ".join(parts)

    @property
    def out_of_range(self) -> str:
        """The message of a value outside ``range``."""
        return f"{self.name} must be a number {self.range}"

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(value for value, _ in self.choices)

    def choice_description(self, value: str) -> str | None:
        return dict(self.choices).get(value) or None


@dataclass(frozen=True, slots=True)
class Operation:
    """An operation (or the options of a variant) and its fields, in schema order.
    ``output`` is the name of the output a video operation makes when it is given none."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    output: str | None = None

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)


def _side(name: str, meaning: str, **kwargs: Any) -> Param:
    return Param(name, meaning, "pixels", 1, MAX_SIDE, **kwargs)


COLOUR = "a CSS colour: a name, `#rgb`, `#rrggbb`, `#rrggbbaa`, `rgb()` or `hsl()`"
POSITION = Param(
    "position",
    "Where the mark goes",
    default="bottom-right",
    choices=tuple((place, "") for place in get_args(Position)),
)
MARGIN = Param("margin", "Distance from the picture's edges", "pixels", 0, 10_000, default=16)
OPACITY = Param(
    "opacity", "Opacity of the mark", "", 0, 1, note="0 is invisible, 1 opaque.", default=0.5
)

RESIZE = Operation(
    "resize",
    "Scale into a box; one of width and height may be omitted.",
    (
        _side("width", "Width of the box"),
        _side("height", "Height of the box"),
        Param(
            "fit",
            "How the picture fits the box",
            default="contain",
            choices=(
                (
                    "contain",
                    "Fit inside the box keeping the aspect ratio; with both sides given, pad to "
                    "exactly the box (transparent, or white in JPEG).",
                ),
                ("cover", "Fill the box keeping the aspect ratio; crop the overflow, centred."),
                ("fill", "Exactly the box; the aspect ratio is not kept."),
                (
                    "inside",
                    "Fit inside the box keeping the aspect ratio, no padding; never enlarges, "
                    "even with upscale.",
                ),
            ),
        ),
        Param("upscale", "Allow making the picture larger than the source", default=False),
    ),
)
THUMBNAIL = Operation(
    "thumbnail",
    "Shrink so that the longest edge is at most `size`; never enlarges.",
    (_side("size", "Longest edge", required=True),),
)
CROP = Operation(
    "crop",
    "Cut out a rectangle, which must lie wholly inside the picture (PROCESSING_FAILED otherwise).",
    (
        Param("left", "Left edge of the rectangle", "pixels", 0, MAX_SIDE, default=0),
        Param("top", "Top edge of the rectangle", "pixels", 0, MAX_SIDE, default=0),
        _side("width", "Width of the rectangle", required=True),
        _side("height", "Height of the rectangle", required=True),
    ),
)
ROTATE = Operation(
    "rotate",
    "Turn the picture clockwise; quarter turns that expand are lossless.",
    (
        Param(
            "degrees",
            "Angle to turn clockwise",
            "degrees",
            -360,
            360,
            note="A negative angle turns counter-clockwise.",
            required=True,
        ),
        Param(
            "expand",
            "Grow the canvas to hold the whole turned picture; false keeps the size and cuts "
            "off the corners",
            default=True,
        ),
        Param(
            "background",
            f"Colour of the corners the turn uncovers, {COLOUR}",
            default="#00000000",
            max_chars=64,
        ),
    ),
)
AUTO_ORIENT = Operation(
    "autoOrient",
    "Apply the EXIF orientation; every source is turned upright first anyway.",
)
TEXT_WATERMARK = Operation(
    "textWatermark",
    "Draw text over the picture in the bundled font.",
    (
        Param("text", "The text", required=True, max_chars=200),
        POSITION,
        MARGIN,
        OPACITY,
        Param(
            "scale",
            "Size of the font as a fraction of the picture's height",
            "",
            0.005,
            1,
            note="The font is at least 8 pixels.",
            default=0.05,
        ),
        Param("color", f"Colour of the text, {COLOUR}", default="#ffffff", max_chars=64),
    ),
)
IMAGE_WATERMARK = Operation(
    "imageWatermark",
    "Draw an uploaded image over the picture.",
    (
        Param("mediaId", "An uploaded image", required=True),
        POSITION,
        MARGIN,
        OPACITY,
        Param(
            "scale",
            "Width of the mark as a fraction of the picture's width",
            "",
            0.01,
            1,
            default=0.2,
        ),
    ),
)
IMAGE_OPERATIONS = (
    RESIZE,
    THUMBNAIL,
    CROP,
    ROTATE,
    AUTO_ORIENT,
    TEXT_WATERMARK,
    IMAGE_WATERMARK,
)

_QUALITY = ", ".join(f"{q} for {f}" for f, q in DEFAULT_QUALITY.items())
VARIANT = Operation(
    "variant",
    "One named output made from the source by its operations, in order, then encoded.",
    (
        Param("name", f"Name of the output: {NAME_RULE}", required=True),
        Param(
            "format",
            "Encoding of the output",
            choices=tuple((f, "") for f in OUTPUT_FORMATS),
            default_note="the source's format when it is one of these, else PNG; an animation "
            "keeps its format when it is WEBP or PNG, else it becomes WEBP",
        ),
        Param(
            "quality",
            "Encoder quality",
            "",
            1,
            100,
            note="For PNG, below 50 compresses harder.",
            default_note=f"{_QUALITY}",
        ),
        Param("progressive", "Write a progressive JPEG (other formats ignore it)", default=False),
        Param(
            "stripMetadata",
            "Remove EXIF, GPS and XMP metadata; the colour profile is kept either way",
            default=True,
        ),
    ),
)
ANIMATION = (
    f"An animated GIF, WEBP or PNG (at most {MAX_FRAMES} frames, TOO_MANY_PIXELS past that) "
    "stays animated when written as WEBP or PNG, every frame going through the operations; "
    "JPEG and AVIF take its first frame."
)

DEFAULT_FRACTION = 0.1
AUDIO_BITRATES = {"aac": 128_000, "mp3": 128_000, "opus": 96_000}
VIDEO_THUMBNAIL = Operation(
    "videoThumbnail",
    "The frame on screen at a time, as an image, upright (the video's rotation applied).",
    (
        Param(
            "at",
            "Time of the frame",
            "seconds",
            0,
            86_400,
            note="Past the end: the last frame. Give at or fraction, not both.",
        ),
        Param(
            "fraction",
            "Time of the frame as a fraction of the duration",
            "",
            0,
            1,
            default_note=f"{number_text(DEFAULT_FRACTION)} when at is not given either",
        ),
        Param(
            "maxSize",
            "Longest edge of the image",
            "pixels",
            16,
            8192,
            default_note="the frame's own size",
        ),
        Param(
            "format",
            "Encoding of the image",
            default="JPEG",
            choices=(("JPEG", ""), ("PNG", ""), ("WEBP", "")),
        ),
    ),
    output="thumbnail",
)
VIDEO_METADATA = Operation(
    "videoMetadata",
    "Put the kind, container, duration, width, height, fps, codecs, bitrate, rotation, "
    "sample rate and channels in Job.result; makes no output.",
)
TRANSCODE = Operation(
    "transcode",
    "Re-encode as H.264/AAC MP4 (fast start), upright, never larger than the source.",
    (
        Param(
            "targetHeight",
            "Greatest height of the video",
            "pixels",
            16,
            4320,
            note="The width follows the aspect ratio.",
            default_note="the source's height",
        ),
        Param(
            "quality",
            "Quality of the encoding",
            default="medium",
            choices=(
                ("low", "x264 CRF 28, audio at 64000 bits per second."),
                ("medium", "x264 CRF 23, audio at 128000 bits per second."),
                ("high", "x264 CRF 18, audio at 192000 bits per second."),
            ),
        ),
    ),
    output="video",
)
EXTRACT_AUDIO = Operation(
    "extractAudio",
    "The first audio track, re-encoded; UNSUPPORTED_MEDIA_TYPE if there is none.",
    (
        Param(
            "codec",
            "Codec of the audio",
            default="aac",
            choices=(("aac", "AAC in M4A."), ("mp3", "MP3."), ("opus", "Opus in Ogg.")),
        ),
        Param(
            "bitrate",
            "Bitrate of the audio",
            "bits per second",
            8_000,
            512_000,
            default_note=", ".join(
                f"{rate} for {enum_name(codec)}" for codec, rate in AUDIO_BITRATES.items()
            ),
        ),
    ),
    output="audio",
)
VIDEO_OPERATIONS = (VIDEO_THUMBNAIL, VIDEO_METADATA, TRANSCODE, EXTRACT_AUDIO)
OUTPUT_NAME = Param(
    "name",
    f"Name of the operation's output: {NAME_RULE}",
    default_note=", ".join(
        f"`{op.output}` for {op.name}" for op in VIDEO_OPERATIONS if op.output is not None
    ),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(param: Param) -> str:
    if param.default is None:
        return ""
    if param.choices:
        return f"`{enum_name(param.default)}`"
    if isinstance(param.default, bool):
        return f"`{str(param.default).lower()}`"
    if isinstance(param.default, str):
        return f'`"{param.default}"`'
    return f"`{number_text(param.default)}`"


def _meaning(param: Param) -> str:
    return _cell(param.sentences(with_choices=True))


def table(operations: tuple[Operation, ...], first: str = "operation") -> str:
    """The README table of ``operations``: a row for each operation, then one per field."""
    lines = [f"| {first} | field | meaning | default |", "|---|---|---|---|"]
    for op in operations:
        lines.append(f"| `{op.name}` | | {_cell(op.description)} | |")
        for param in op.params:
            required = " (required)" if param.required else ""
            lines.append(f"| | `{param.name}`{required} | {_meaning(param)} | {_default(param)} |")
    return "\n".join(lines)


def readme_sections() -> dict[str, str]:
    """The README's generated blocks, by the name in their markers."""
    return {
        "image-operations": table(IMAGE_OPERATIONS),
        "image-variant": table((VARIANT,), "per variant") + "\n\n" + ANIMATION,
        "video-operations": table(VIDEO_OPERATIONS)
        + f"\n\nEach entry may also give `name`. {_cell(OUTPUT_NAME.description)}",
    }


_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)


def rewrite(text: str) -> str:
    """``text`` (the README) with every generated block written anew."""
    sections = readme_sections()
    return _BLOCK.sub(lambda m: m.group(1) + sections[m.group("name")] + "\n" + m.group(4), text)


def generated_blocks(text: str) -> dict[str, str]:
    """The generated blocks that ``text`` holds now, by name."""
    return {m.group("name"): m.group("body").removesuffix("\n") for m in _BLOCK.finditer(text)}


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text()))
