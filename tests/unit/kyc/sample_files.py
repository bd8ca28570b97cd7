"""Small real files for the kyc file checks, built by hand (no imaging library).

pdf(catalog(), page())                          # a one-page PDF, %%EOF-terminated
pdf(catalog(b"/OpenAction 3 0 R"), page(), b"<< /S /JavaScript /JS (x) >>")
jpeg(exif=exif_block(orientation=6, gps=True))  # a decodable 1x1 grey JPEG
png()                                           # a 1x1 grey PNG
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "GPS_LATITUDE_REF",
    "catalog",
    "exif_block",
    "jpeg",
    "object_stream",
    "page",
    "pdf",
    "png",
    "png_chunk",
    "stream",
]


def catalog(extra: bytes = b"") -> bytes:
    return b"<< /Type /Catalog /Pages 2 0 R " + extra + b">>"


def page() -> bytes:
    return b"<< /Type /Pages /Kids [] /Count 0 >>"


def stream(dictionary: bytes, data: bytes) -> bytes:
    """A stream object's text: `dictionary` is the inside of << >>, without /Length."""
    return b"<< /Length %d " % len(data) + dictionary + b" >>\nstream\n" + data + b"\nendstream"


def object_stream(
    objects: list[tuple[int, bytes]], *, dictionary: bytes = b"/Type /ObjStm"
) -> bytes:
    """A FlateDecode object stream holding `objects` (number, text)."""
    offsets = []
    body = b""
    for number, text in objects:
        offsets.append(b"%d %d" % (number, len(body)))
        body += text + b"\n"
    header = b" ".join(offsets) + b"\n"
    packed = zlib.compress(header + body)
    return stream(
        dictionary + b" /N %d /First %d /Filter /FlateDecode" % (len(objects), len(header)),
        packed,
    )


def pdf(*objects: bytes, trailer: bytes = b"/Root 1 0 R", tail: bytes = b"") -> bytes:
    """`objects` numbered from 1, a cross-reference table and a trailer, then `tail` after
    the %%EOF."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, text in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + text + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d " % (len(objects) + 1) + trailer + b" >>\n"
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out) + tail


# ----- JPEG -------------------------------------------------------------------------------

GPS_LATITUDE_REF = b"N\x00\x00\x00"


def exif_block(*, orientation: int | None = None, gps: bool = False) -> bytes:
    """A little-endian Exif TIFF block: IFD0 with a Make, the orientation, and a GPS IFD
    pointer to a GPS IFD holding a latitude reference (the tests look for it)."""
    entries = [(0x010F, 2, 4, b"Cam\x00")]  # Make, ASCII, 4 bytes inline
    if orientation is not None:
        entries.append((0x0112, 3, 1, struct.pack("<HH", orientation, 0)))
    gps_at = 8 + 2 + 12 * (len(entries) + (1 if gps else 0)) + 4
    if gps:
        entries.append((0x8825, 4, 1, struct.pack("<I", gps_at)))
    ifd0 = struct.pack("<H", len(entries))
    for tag, kind, count, value in sorted(entries):
        ifd0 += struct.pack("<HHI", tag, kind, count) + value
    ifd0 += b"\x00\x00\x00\x00"
    tiff = b"II\x2a\x00\x08\x00\x00\x00" + ifd0
    if gps:
        tiff += struct.pack("<H", 1) + struct.pack("<HHI", 0x0001, 2, 2) + GPS_LATITUDE_REF
        tiff += b"\x00\x00\x00\x00"
    return tiff


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(*, exif: bytes | None = None, before_frame: bytes = b"", trailing: bytes = b"") -> bytes:
    """A 1x1 grey baseline JPEG (JFIF; an Exif APP1 segment holding `exif` first when
    given), `before_frame` (whole segments) before its frame header, `trailing` after it."""
    out = b"\xff\xd8"
    if exif is not None:
        out += _segment(0xE1, b"Exif\x00\x00" + exif)
    out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += before_frame
    out += _segment(0xDB, b"\x00" + b"\x01" * 64)  # quantisation table 0: all ones
    out += _segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00")  # 1x1, one component
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    out += _segment(0xC4, b"\x00" + one_code)  # DC table 0: difference category 0
    out += _segment(0xC4, b"\x10" + one_code)  # AC table 0: end of block
    out += _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    out += b"\x3f"  # DC "0", AC end of block "0", padded with ones
    return out + b"\xff\xd9" + trailing


# ----- PNG --------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(*, extra: bytes = b"", trailing: bytes = b"", size: tuple[int, int] = (1, 1)) -> bytes:
    """A grey 8-bit PNG of `size` (its rows all 0x80), `extra` chunks before its data."""
    width, height = size
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = (b"\x00" + b"\x80" * width) * height if width * height <= 1 << 20 else b"\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + header
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
        + trailing
    )
