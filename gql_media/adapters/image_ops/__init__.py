"""Image processing with Pillow: identifying uploads and running variant pipelines.

CPU-bound and blocking: call from a thread. Every function raises ``MediaError`` with a
stable code for media it cannot handle; nothing here touches the network or storage.

A pipeline starts from the upright picture (EXIF orientation applied), runs its operations
in order and encodes the result. Large JPEGs are decoded through Pillow's draft mode at the
smallest scale that still covers what the variants need, and resizes use ``reducing_gap``
so a 24-megapixel source never decodes at full size for a thumbnail.

``model`` holds the types, ``reading`` the opening and decoding of files within bounds,
``transform`` and ``watermark`` the operations, ``encoding`` the writing of results and
``pipeline`` the whole run.
"""

from gql_media.adapters.image_ops.encoding import encode
from gql_media.adapters.image_ops.model import (
    CONTENT_TYPES,
    DEFAULT_QUALITY,
    MAX_FRAMES,
    OUTPUT_FORMATS,
    AutoOrient,
    Crop,
    Fit,
    ImageFormat,
    ImageInfo,
    ImageWatermark,
    Operation,
    Output,
    Position,
    ProcessedImage,
    Resize,
    Rotate,
    TextWatermark,
    Thumbnail,
    Variant,
    content_type_for,
)
from gql_media.adapters.image_ops.pipeline import apply, decode_upright, process_image
from gql_media.adapters.image_ops.reading import probe_image

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_QUALITY",
    "MAX_FRAMES",
    "OUTPUT_FORMATS",
    "AutoOrient",
    "Crop",
    "Fit",
    "ImageFormat",
    "ImageInfo",
    "ImageWatermark",
    "Operation",
    "Output",
    "Position",
    "ProcessedImage",
    "Resize",
    "Rotate",
    "TextWatermark",
    "Thumbnail",
    "Variant",
    "apply",
    "content_type_for",
    "decode_upright",
    "encode",
    "probe_image",
    "process_image",
]
