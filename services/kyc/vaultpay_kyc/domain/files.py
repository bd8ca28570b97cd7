"""Document files: the three accepted kinds, told apart by their magic bytes, the size cap, and
what the whole file may carry.

What a client claims ("image/png", a ".pdf" name) decides nothing: the first bytes do. A text
file sent as "application/pdf" is refused, and so is a PNG sent as "image/jpeg". Those checks
are cheap and come first (`check_document_file`, and `check_sniffed` on a stream's first
bytes). Moderators then open the file in their viewers, so `inspect_document` reads all of it
before it is sealed: a PDF with scripts, actions, attachments or encryption (pdf_check), an
image that is not whole or has another file appended (image_check), and any file ending with a
ZIP archive's directory, are refused; the Exif block (GPS position) of an image is removed.
It is CPU work in proportion to the file (bounded: well under a second for a crafted 10 MiB
file, milliseconds for a scan), so the use cases run it in a worker thread.

    kind = check_document_file(data, "image/png", max_bytes=10 << 20)   # or ValidationError
    stored = inspect_document(kind, data, max_bytes=10 << 20)           # or ValidationError
"""

from __future__ import annotations

from enum import Enum

from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.image_check import strip_location_jpeg, strip_location_png
from vaultpay_kyc.domain.pdf_check import ContentRefusedError, check_pdf

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "SNIFF_BYTES",
    "DocumentContentType",
    "check_document_file",
    "check_sniffed",
    "inspect_document",
    "parse_content_type",
    "sniff_content_type",
]

DEFAULT_MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
# The longest signature we match (PNG's 8 bytes).
SNIFF_BYTES = 8


class DocumentContentType(Enum):
    """Value = the media type on the wire."""

    PDF = "application/pdf"
    JPEG = "image/jpeg"
    PNG = "image/png"


_MAGIC: dict[DocumentContentType, bytes] = {
    DocumentContentType.PDF: b"%PDF-",
    DocumentContentType.PNG: b"\x89PNG\r\n\x1a\n",
    DocumentContentType.JPEG: b"\xff\xd8\xff",
}


def parse_content_type(raw: str, *, field: str = "document_content_type") -> DocumentContentType:
    """One of the three media types (case-insensitive, no parameters), or ValidationError."""
    value = raw.strip().lower()
    if not value:
        raise ValidationError.single(field, "is required with a document file")
    for kind in DocumentContentType:
        if kind.value == value:
            return kind
    raise ValidationError.single(field, "must be application/pdf, image/jpeg or image/png")


def sniff_content_type(head: bytes) -> DocumentContentType | None:
    """The kind whose signature `head` starts with, or None."""
    for kind, magic in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def check_sniffed(head: bytes, declared: DocumentContentType, *, field: str) -> None:
    """The file's first bytes must be the signature of the declared kind."""
    found = sniff_content_type(head)
    if found is None:
        raise ValidationError.single(field, "is not a PDF, JPEG or PNG file (by its content)")
    if found is not declared:
        raise ValidationError.single(
            field, f"the content is {found.value}, not the declared {declared.value}"
        )


def check_document_file(
    data: bytes,
    raw_content_type: str,
    *,
    max_bytes: int,
    file_field: str = "document_file",
    type_field: str = "document_content_type",
) -> DocumentContentType:
    """The kind of a whole (inline) file: size within the cap and content as declared."""
    if len(data) > max_bytes:
        raise ValidationError.single(file_field, f"must be at most {max_bytes} bytes")
    declared = parse_content_type(raw_content_type, field=type_field)
    check_sniffed(data[:SNIFF_BYTES], declared, field=file_field)
    return declared


# A ZIP reader starts from the end-of-central-directory record, found in the last 22 bytes
# plus its comment (at most 65,535): a file that ends with one opens as an archive too. Its
# signature alone is looked for (zipfile ignores the disk fields, which were required to be
# zero here), and the ZIP64 end-of-directory locator's.
_ZIP_END_RECORDS = (b"PK\x05\x06", b"PK\x06\x07")
_ZIP_END_REACH = 22 + 0xFFFF
# Acrobat opens as a PDF any file with %PDF- in its first 1,024 bytes.
_PDF_HEADER_REACH = 1024


def _no_other_format(kind: DocumentContentType, data: bytes) -> None:
    reach = max(0, len(data) - _ZIP_END_REACH)
    if any(data.find(record, reach) >= 0 for record in _ZIP_END_RECORDS):
        raise ContentRefusedError(
            "ends with a ZIP archive's directory (a file inside a file): send the document alone"
        )
    if kind is not DocumentContentType.PDF and data.find(b"%PDF-", 0, _PDF_HEADER_REACH) >= 0:
        raise ContentRefusedError("is an image that also carries a PDF: send the image alone")


def inspect_document(
    kind: DocumentContentType, data: bytes, *, max_bytes: int, field: str = "document_file"
) -> bytes:
    """The file to store: `data` checked whole for what it carries (see the module
    docstring), an image without its Exif location. A refusal is a ValidationError on
    `field` that describes what was found, never quotes it."""
    try:
        _no_other_format(kind, data)
        if kind is DocumentContentType.PDF:
            check_pdf(data, max_bytes=max_bytes)
            return data
        if kind is DocumentContentType.JPEG:
            return strip_location_jpeg(data)
        return strip_location_png(data)
    except ContentRefusedError as exc:
        raise ValidationError.single(field, str(exc)) from None
