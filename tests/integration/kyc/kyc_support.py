"""Requests and files the kyc integration tests share."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_kyc.domain.documents import verhoeff_check_digit

__all__ = [
    "MiB",
    "aadhaar",
    "pan",
    "pdf",
    "rid",
    "submit_request",
    "upload_stream",
]

MiB = 1024 * 1024


def rid() -> str:
    return str(uuid.uuid4())


def pan() -> str:
    """A fresh, well-formed PAN (person holder type), unique enough per test."""
    digits = f"{uuid.uuid4().int % 10_000:04d}"
    letters = "".join(chr(65 + (uuid.uuid4().int >> (5 * i)) % 26) for i in range(4))
    return f"{letters[:3]}P{letters[3]}{digits}Z"


def aadhaar() -> str:
    body = str(2 + uuid.uuid4().int % 8) + f"{uuid.uuid4().int % 10**10:010d}"
    return body + verhoeff_check_digit(body)


def pdf(size: int, marker: bytes = b"") -> bytes:
    """A PDF as kyc's content check reads one (its %%EOF last, no script), carrying `marker`,
    of exactly `size` bytes."""
    head, tail = b"%PDF-1.7\n" + marker + b"\n", b"\n%%EOF\n"
    return head + b"A" * (size - len(head) - len(tail)) + tail


def submit_request(
    number: str, file: bytes = b"", content_type: str = "", *, request_id: str | None = None
) -> kyc_pb2.SubmitKycRequest:
    return kyc_pb2.SubmitKycRequest(
        request_id=request_id or rid(),
        document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
        document_number=number,
        document_file=file,
        document_content_type=content_type or ("application/pdf" if file else ""),
    )


def upload_stream(
    number: str,
    data: bytes,
    *,
    chunk: int = MiB,
    size: int | None = None,
    sha256: str | None = None,
    content_type: str = "application/pdf",
    request_id: str | None = None,
) -> Iterator[kyc_pb2.UploadKycDocumentRequest]:
    yield kyc_pb2.UploadKycDocumentRequest(
        metadata=kyc_pb2.UploadKycDocumentMetadata(
            request_id=request_id or rid(),
            document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
            document_number=number,
            document_content_type=content_type,
            document_size_bytes=len(data) if size is None else size,
            document_sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        )
    )
    for start in range(0, len(data), chunk):
        yield kyc_pb2.UploadKycDocumentRequest(chunk=data[start : start + chunk])
