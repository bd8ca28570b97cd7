"""The request side of UploadKycDocument: metadata first, then chunks, and a polite refusal.

When the server refuses a client stream while the client is still writing, the HTTP/2 stream is
reset under the client's pending write and grpc reports `INTERNAL: Internal error from Core`
instead of the server's status (seen with grpcio 1.85: a chunk sent before the metadata, about
one call in three). So a refused upload (bad input, KYC_ALREADY_SUBMITTED, no wallet, ...)
first reads and discards what the client still sends, up to a bound (the cap plus a margin),
and only then answers: the client gets the refusal's own status and reason. Nothing read while
draining is kept, and an abusive stream that passes the bound is cut off as before.

Every message drained counts toward the bound as at least the smallest chunk the service
accepts (`min_message_bytes`, 16 KiB by default), whatever it carries: an empty message's
`ByteSize()` is 0, so a stream of them was read for ever, and each costs tens of microseconds
whatever its size (60 µs, client and server in one process, grpcio 1.85); counted by its 5-byte
frame prefix alone, a bound of 11 MiB would still read two million of them (minutes of CPU),
counted so, 704. A client that follows the contract (chunks of at least that size, the last
one excepted) is counted what it sends, so it is drained whole and hears its refusal; one that
sends smaller chunks, itself refused, is cut off earlier when its file is large.

A guard passed as `hold` (one upload per user, servicers.py) is taken before the stream is read
and released only after the drain: a refused stream cannot be followed by the user's next one
while it is still being read.

    stream = UploadStream(
        request_iterator, drain_limit_bytes=cap + (1 << 20), min_message_bytes=16 * 1024
    )
    submission = await stream.answer(
        lambda metadata, chunks: use_case(metadata, chunks), hold=one_upload_of(user_id)
    )
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack
from typing import TypeVar

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.errors import DomainError, ValidationError
from vaultpay_kyc.domain.upload import CHUNK_FIELD, METADATA_FIELD

__all__ = ["UploadStream"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = kyc_pb2.UploadKycDocumentMetadata

# gRPC's length-prefixed message framing: a compressed flag and a 4-byte length.
_FRAME_PREFIX_BYTES = 5


class UploadStream:
    def __init__(
        self,
        requests: AsyncIterable[kyc_pb2.UploadKycDocumentRequest],
        *,
        drain_limit_bytes: int,
        min_message_bytes: int,
    ) -> None:
        self._messages = aiter(requests)
        self._drain_limit = drain_limit_bytes
        self._min_message = min_message_bytes

    async def _metadata(self) -> Metadata:
        try:
            first = await anext(self._messages)
        except StopAsyncIteration:
            raise ValidationError.single(
                METADATA_FIELD, "the stream is empty: send it first"
            ) from None
        if first.WhichOneof("payload") != METADATA_FIELD:
            raise ValidationError.single(METADATA_FIELD, "must come first, before any chunk")
        return first.metadata

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for message in self._messages:
            which = message.WhichOneof("payload")
            if which == CHUNK_FIELD:
                yield message.chunk
            elif which == METADATA_FIELD:
                raise ValidationError.single(
                    METADATA_FIELD, "must be sent once, in the first message"
                )
            else:
                raise ValidationError.single("payload", "every message carries metadata or a chunk")

    async def _drain(self) -> None:
        drained = 0
        messages = 0
        async for message in self._messages:
            messages += 1
            drained += max(message.ByteSize() + _FRAME_PREFIX_BYTES, self._min_message)
            if drained > self._drain_limit:
                log.info(
                    "refused upload kept streaming; cut off",
                    extra={"bytes": drained, "messages": messages},
                )
                return

    async def answer(
        self,
        work: Callable[[Metadata, AsyncIterator[bytes]], Awaitable[T]],
        *,
        hold: AbstractContextManager[object] | None = None,
    ) -> T:
        """`work(metadata, chunks)`, inside `hold`; a refusal is raised after the rest of the
        stream is read, `hold` still held (a refusal by `hold` itself is drained too, without
        it). Unexpected errors are not drained for: they answer INTERNAL either way."""
        with ExitStack() as held:
            try:
                if hold is not None:
                    held.enter_context(hold)
                return await work(await self._metadata(), self._chunks())
            except DomainError:
                await self._drain()
                raise
