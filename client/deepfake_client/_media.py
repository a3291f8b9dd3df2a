"""What a file is, from its first bytes: the image and video formats the client and the web page take.

One list for the CLI (``scan`` recognises files by content, not by name), the web page (it refuses
anything else before decoding) and their help texts.
"""

from __future__ import annotations

from pathlib import Path

# First bytes of the image formats taken; anything else is not decoded.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


IMAGE_FORMATS = ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF")
VIDEO_FORMATS = ("MP4", "MOV", "MKV", "WebM", "AVI", "FLV", "MPEG", "MPEG-TS")  # what the CLI reads too (FFmpeg)
SNIFF_BYTES = 192  # an MPEG transport stream is recognised by its second packet's sync byte


def sniff(head: bytes) -> tuple[str, str] | None:
    """("image" | "video", extension) from a file's first bytes; None for anything else."""
    if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image", ""
    if head[4:8] == b"ftyp":
        return "video", ".mp4"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "video", ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    if head.startswith(b"FLV\x01"):
        return "video", ".flv"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video", ".mpg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video", ".ts"
    return None


def sniff_file(path: str | Path) -> str | None:
    """ "image", "video" or None for a file, from its first bytes."""
    with open(path, "rb") as handle:
        kind = sniff(handle.read(SNIFF_BYTES))
    return kind[0] if kind else None
