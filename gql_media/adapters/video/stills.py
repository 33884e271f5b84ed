"""A still image of a video at a time."""

from __future__ import annotations

from pathlib import Path

from av.video.frame import VideoFrame
from PIL import Image

from gql_media.adapters import image_ops
from gql_media.adapters.video.decoding import (
    DEFAULT_LIMITS,
    Limits,
    bounded,
    frame_rotation,
    media_duration,
    needs_video,
    opened,
    to_image,
    turn_upright,
)
from gql_media.errors import ErrorCode, MediaError


def video_thumbnail(
    source: Path,
    *,
    at: float | None = None,
    fraction: float | None = None,
    max_size: int | None = None,
    format: str = "JPEG",
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[bytes, str, int, int]:
    """A still of the video at ``at`` seconds or ``fraction`` of its duration (default: a
    tenth of the way in), upright and fitted in ``max_size``: (data, type, width, height)."""
    with opened(source) as container:
        stream = needs_video(container, limits)
        duration = media_duration(container, stream) or 0.0
        target = at if at is not None else duration * (0.1 if fraction is None else fraction)
        target = max(0.0, min(target, max(0.0, duration - 0.001)))
        if target > 0 and stream.time_base is not None:
            container.seek(round(target / stream.time_base), stream=stream, backward=True)
        chosen: VideoFrame | None = None
        for frame in bounded(container.decode(stream), limits):
            # the frame on screen at ``target``: the last one that starts by then
            if chosen is not None and frame.time is not None and frame.time > target + 1e-3:
                break
            chosen = frame
        if chosen is None:
            raise MediaError(ErrorCode.MEDIA_CORRUPT, "no frame could be decoded at that time")
        image = turn_upright(to_image(chosen), frame_rotation(chosen))
    if max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    output = image_ops.Output(format=format)
    data = image_ops.encode(image, output, format, image)
    return data, image_ops.content_type_for(format), image.width, image.height
