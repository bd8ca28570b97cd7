"""Document files: the three accepted kinds, told apart by their magic bytes, and the size cap.

What a client claims ("image/png", a ".pdf" name) decides nothing: the first bytes do. A text
file sent as "application/pdf" is refused, and so is a PNG sent as "image/jpeg".

    kind = check_document_file(data, "image/png", max_bytes=10 << 20)   # or ValidationError
"""

from __future__ import annotations

from enum import Enum

from vaultpay_common.errors import ValidationError

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "SNIFF_BYTES",
    "DocumentContentType",
    "check_document_file",
    "check_sniffed",
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
