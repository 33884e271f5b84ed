"""The tables of operations in docs/media.md, written from the operations' own fields.

``python -m gql_media.services.operations.docs docs/media.md`` rewrites them; a test fails
when they differ from what the operations state.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gql_media.services.operations.fields import Param, Spec, enum_name, number_text
from gql_media.services.operations.image import ANIMATION, IMAGE_OPERATIONS, VARIANT
from gql_media.services.operations.video import OUTPUT_NAME, VIDEO_OPERATIONS

COMMAND = "python -m gql_media.services.operations.docs docs/media.md"


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


def table(operations: tuple[Spec, ...], first: str = "operation") -> str:
    """The table of ``operations``: a row for each operation, then one per field."""
    lines = [f"| {first} | field | meaning | default |", "|---|---|---|---|"]
    for op in operations:
        lines.append(f"| `{op.name}` | | {_cell(op.description)} | |")
        for param in op.params:
            required = " (required)" if param.required else ""
            meaning = _cell(param.sentences(with_choices=True))
            lines.append(f"| | `{param.name}`{required} | {meaning} | {_default(param)} |")
    return "\n".join(lines)


def generated_sections() -> dict[str, str]:
    """The generated blocks of docs/media.md, by the name in their markers."""
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
    """``text`` (docs/media.md) with every generated block written anew."""
    sections = generated_sections()
    return _BLOCK.sub(lambda m: m.group(1) + sections[m.group("name")] + "\n" + m.group(4), text)


def generated_blocks(text: str) -> dict[str, str]:
    """The generated blocks that ``text`` holds now, by name."""
    return {m.group("name"): m.group("body").removesuffix("\n") for m in _BLOCK.finditer(text)}


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/media.md")
    path.write_text(rewrite(path.read_text()))
