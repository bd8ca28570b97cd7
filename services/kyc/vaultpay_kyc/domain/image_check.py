"""JPEG and PNG files walked by their structure: complete, nothing appended, no location kept.

The magic bytes say what a file starts as, not what else it carries. Each image is walked
segment by segment (JPEG) or chunk by chunk (PNG), so its real end is known (not the last
FFD9 or IEND anywhere, which an appended file can end with too):

- a JPEG ends with the end-of-image marker of its last image (a camera's MPF file, or an
  Ultra HDR photo, is a primary image followed by others, each a whole JPEG); after it, at most
  `JPEG_PADDING` bytes of padding (NUL, 0xFF or white space) may follow. A motion photo's
  video, a ZIP or a PDF after the image is refused;
- a PNG ends with its IEND chunk: nothing may follow. Every chunk's CRC must match;
- the pixels an image declares are at most `MAX_PIXELS` (a viewer allocates them before it
  decodes anything: a 10 MB PNG can declare a gigapixel of one colour).

`strip_location_jpeg` and `strip_location_png` (which check the file first) remove the Exif
metadata (GPS position, camera serial numbers, thumbnail): a JPEG's APP1 "Exif" segments and a
PNG's eXIf chunk, replaced, when the Exif said the image is turned, by a 26-byte Exif block
holding only that orientation (or viewers would show a portrait photo on its side). Nothing else changes: the image data are copied byte
for byte, never re-encoded. Not removed: XMP (which may repeat the position), IPTC, PNG text
chunks, and the Exif of a JPEG's secondary images (MPF), whose offsets the primary's MPF
segment records.

    stored = strip_location_jpeg(data)    # checked, or ContentRefusedError
"""

from __future__ import annotations

import re
import struct
import time
import zlib

from vaultpay_kyc.domain.pdf_check import CPU_BUDGET_SECONDS, ContentRefusedError, bytes_text

__all__ = [
    "JPEG_PADDING",
    "MAX_PARTS",
    "MAX_PIXELS",
    "check_jpeg",
    "check_png",
    "strip_location_jpeg",
    "strip_location_png",
]

MAX_PIXELS = 100_000_000
JPEG_PADDING = 64

# Segments (JPEG) or chunks (PNG) walked per file, at most: a file of tiny ones costs a
# Python step each. Real photos and scans have tens of segments, and a few thousand chunks.
MAX_PARTS = 100_000
_CLOCK_EVERY = 256

_SOI = b"\xff\xd8"
_FILL = re.compile(rb"\xff*+")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A marker after entropy-coded data: its last 0xFF (fill bytes may repeat it) and a byte that
# is not a stuffed zero, a restart marker or another fill byte. Two bytes, so each start costs
# the same: `\xff++` first re-read a run of fill bytes from each of its bytes (quadratic:
# 160,000 of them took 3.4 s).
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PADDING = re.compile(rb"[\x00\xff\t\n\r ]*+")
# Start-of-frame markers (their segment gives the size): C0-CF but DHT, JPG and DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_APP1 = 0xE1
_APP2 = 0xE2
_SOS = 0xDA
_EOI = 0xD9
_EXIF_ID = b"Exif\x00"
_MPF_ID = b"MPF\x00"
_ORIENTATION_TAG = 0x0112


class _Budget:
    """Parts walked, at most `MAX_PARTS`, and the thread's CPU time, checked every
    `_CLOCK_EVERY` parts, at most `CPU_BUDGET_SECONDS`."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._left = MAX_PARTS
        self._deadline = time.thread_time() + CPU_BUDGET_SECONDS

    def count(self) -> None:
        self._left -= 1
        if self._left < 0:
            raise ContentRefusedError(
                f"is an image too intricate to check (over {MAX_PARTS} {self._what})"
            )
        if self._left % _CLOCK_EVERY == 0 and time.thread_time() > self._deadline:
            raise ContentRefusedError(
                f"is an image too intricate to check (over {CPU_BUDGET_SECONDS:g} s of reading)"
            )


def _incomplete(kind: str, why: str) -> ContentRefusedError:
    return ContentRefusedError(f"is not a complete {kind} image ({why})")


def _too_large(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ContentRefusedError(
            f"is an image of {width} x {height} pixels, more than {MAX_PIXELS // 1_000_000} "
            "megapixels"
        )


# ----- JPEG -------------------------------------------------------------------------------


def _jpeg_segments(
    data: bytes, start: int, budget: _Budget
) -> tuple[list[tuple[int, int, int]], int]:
    """The segments of the JPEG image at `start` (marker, segment start, segment end) up to
    its end-of-image marker, and the position after that marker."""
    if data[start : start + 2] != _SOI:
        raise _incomplete("JPEG", "no start-of-image marker")
    segments: list[tuple[int, int, int]] = []
    pos = start + 2
    framed = False
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise _incomplete("JPEG", "a segment where a marker should be")
        fill = _FILL.match(data, pos)
        assert fill is not None
        pos = fill.end()
        if pos >= len(data):
            raise _incomplete("JPEG", "it ends before its end-of-image marker")
        marker = data[pos]
        begin = pos - 1
        pos += 1
        budget.count()
        if marker == _EOI:
            if not framed:
                raise _incomplete("JPEG", "no frame")
            return segments, pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if marker in (0x00, 0xD8):
            raise _incomplete("JPEG", "a misplaced marker")
        if pos + 2 > len(data):
            raise _incomplete("JPEG", "it ends inside a segment")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + length
        if length < 2 or end > len(data):
            raise _incomplete("JPEG", "a segment longer than the file")
        if marker in _SOF:
            if length < 8:
                raise _incomplete("JPEG", "a frame header too short")
            height, width = struct.unpack_from(">HH", data, pos + 3)
            _too_large(width, height)
            framed = True
        segments.append((marker, begin, end))
        pos = end
        if marker == _SOS:
            if not framed:
                raise _incomplete("JPEG", "image data before its frame header")
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                raise _incomplete("JPEG", "it ends before its end-of-image marker")
            pos = found.start()


def _jpeg_images(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Each image's segments; refuses what follows the last one beyond padding."""
    images = []
    pos = 0
    budget = _Budget("JPEG segments")
    while True:
        segments, pos = _jpeg_segments(data, pos, budget)
        images.append(segments)
        if data.startswith(b"\xff\xd8\xff", pos):  # a further image (MPF, Ultra HDR)
            continue
        padding = _PADDING.match(data, pos)
        assert padding is not None
        trailing = len(data) - pos
        if padding.end() != len(data) or trailing > JPEG_PADDING:
            raise ContentRefusedError(
                f"carries {bytes_text(trailing)} after the end of its JPEG image (another file, or "
                "a motion photo's video?): send the image alone"
            )
        return images


def check_jpeg(data: bytes) -> None:
    _jpeg_images(data)


def _orientation(tiff: bytes) -> int | None:
    """The Orientation (1-8) of an Exif TIFF block's first IFD, None when absent or unread."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for index in range(min(count, (len(tiff) - ifd - 2) // 12)):
        entry = ifd + 2 + 12 * index
        tag, kind, number = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == _ORIENTATION_TAG and kind == 3 and number == 1:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if 1 <= value <= 8 else None
    return None


def _orientation_only(orientation: int) -> bytes:
    """A TIFF block with one IFD holding only `orientation`."""
    return (
        b"MM\x00\x2a\x00\x00\x00\x08"
        + struct.pack(">H", 1)
        + struct.pack(">HHIHH", _ORIENTATION_TAG, 3, 1, orientation, 0)
        + b"\x00\x00\x00\x00"
    )


def strip_location_jpeg(data: bytes) -> bytes:
    """`data` without the primary image's Exif APP1 segments (those before its MPF segment,
    whose offsets must not move), keeping an orientation other than 1. Checks the file."""
    images = _jpeg_images(data)
    kept: list[bytes] = []
    pos = 0
    orientation: int | None = None
    for marker, begin, end in images[0]:
        if marker == _SOS:
            break
        if marker == _APP2 and data.startswith(_MPF_ID, begin + 4):
            break
        if marker == _APP1 and data.startswith(_EXIF_ID, begin + 4):
            kept.append(data[pos:begin])
            pos = end
            if orientation is None:
                orientation = _orientation(data[begin + 10 : end])
    if pos == 0:
        return data
    if orientation is not None and orientation != 1:
        block = b"Exif\x00\x00" + _orientation_only(orientation)
        kept.insert(1, b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block)
    kept.append(data[pos:])
    return b"".join(kept)


# ----- PNG --------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """Every chunk (type, chunk start, chunk end) to IEND; refuses anything after it."""
    if not data.startswith(_PNG_SIGNATURE):
        raise _incomplete("PNG", "no signature")
    chunks: list[tuple[bytes, int, int]] = []
    pos = len(_PNG_SIGNATURE)
    budget = _Budget("PNG chunks")
    view = memoryview(data)
    while True:
        budget.count()
        if pos + 12 > len(data):
            raise _incomplete("PNG", "it ends before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise _incomplete("PNG", "a chunk longer than the file")
        if not kind.isalpha() or not kind.isascii():
            raise _incomplete("PNG", "a chunk of no type")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise _incomplete("PNG", "a chunk whose CRC does not match")
        if not chunks:
            if kind != b"IHDR" or length != 13:
                raise _incomplete("PNG", "no header chunk first")
            width, height = struct.unpack_from(">II", data, pos + 8)
            _too_large(width, height)
        chunks.append((kind, pos, end))
        pos = end
        if kind == b"IEND":
            if pos != len(data):
                raise ContentRefusedError(
                    f"carries {bytes_text(len(data) - pos)} after the end of its PNG image (its "
                    "IEND chunk): send the image alone"
                )
            return chunks


def check_png(data: bytes) -> None:
    _png_chunks(data)


def strip_location_png(data: bytes) -> bytes:
    """`data` without its eXIf chunk (one with the orientation alone when it is not 1).
    Checks the file."""
    kept: list[bytes] = []
    pos = 0
    for kind, begin, end in _png_chunks(data):
        if kind != b"eXIf":
            continue
        kept.append(data[pos:begin])
        pos = end
        orientation = _orientation(data[begin + 8 : end - 4])
        if orientation is not None and orientation != 1:
            tiff = _orientation_only(orientation)
            body = b"eXIf" + tiff
            kept.append(struct.pack(">I", len(tiff)) + body + struct.pack(">I", zlib.crc32(body)))
    if pos == 0:
        return data
    kept.append(data[pos:])
    return b"".join(kept)
