"""Video and audio with PyAV (its wheels carry FFmpeg): probing, frames, transcodes, audio.

CPU-bound and blocking: call from a thread. Files are recognised by their first bytes and
then by FFmpeg's demuxer; only the containers ``probe`` lists are accepted.
Failures raise ``MediaError`` with a stable code. Long operations report progress as the
decoded timestamp over the duration.

Every function is bounded and decodes strictly (see ``decoding``); ``probe`` says what a
file is, ``stills`` takes a frame as an image, ``encoding`` writes transcodes and audio.
"""

from gql_media.adapters.video.decoding import Budget, Limits
from gql_media.adapters.video.encoding import (
    AUDIO_BITRATE,
    AUDIO_OUT,
    CRF,
    AudioCodec,
    Progress,
    Quality,
    extract_audio,
    transcode,
)
from gql_media.adapters.video.probe import MediaInfo, check_media, probe_media
from gql_media.adapters.video.stills import video_thumbnail

__all__ = [
    "AUDIO_BITRATE",
    "AUDIO_OUT",
    "CRF",
    "AudioCodec",
    "Budget",
    "Limits",
    "MediaInfo",
    "Progress",
    "Quality",
    "check_media",
    "extract_audio",
    "probe_media",
    "transcode",
    "video_thumbnail",
]
