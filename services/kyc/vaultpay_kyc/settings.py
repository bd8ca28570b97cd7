"""The kyc service's settings (env prefix KYC_), validated at start-up.

Keys: every key-encryption key is derived from the root key (`KYC_KEY_ENCRYPTION_KEY`) and
its id (`derived_key("kyc-kek/<key id>")`); the keyed hash of document numbers has its own
derived key (`derived_key("kyc-document-hash")`), which does not rotate. None of them is ever
stored in the database.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import MessageBytes, Seconds, SharedDatabaseSettings

__all__ = ["KycSettings"]

_MiB = 1024 * 1024
# Room in one gRPC message for the other fields beside a file of the cap.
_MESSAGE_OVERHEAD = 64 * 1024


class KycSettings(SharedDatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="KYC_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50054"
    # The largest document file, inline (SubmitKyc) or streamed (UploadKycDocument).
    document_max_bytes: int = 10 * _MiB
    # The largest chunk of an upload stream (the contract says at most 1 MiB).
    upload_chunk_max_bytes: int = _MiB
    # SubmitKyc carries a whole file and AdminGetKycSubmission returns one: room for both.
    max_message_bytes: MessageBytes = 10 * _MiB + _MESSAGE_OVERHEAD
    # How often the outbox relay looks for due events (it is also woken after each commit).
    outbox_poll_seconds: Seconds = 1.0
    # Failed deliveries of an outbox event before it is dead-lettered. Its SetKycTier events
    # unlock what an approved user may do with money, so a wallet outage of days (41-83 h at
    # the 5-minute backoff cap), not the other relays' half hour to an hour, ends one.
    outbox_max_attempts: int = 1000
    # Idempotency records older than this are deleted (at least 24 h, ARCHITECTURE.md).
    idempotency_retention_hours: int = 48
    # Rows re-wrapped per transaction during a key rotation.
    rotation_batch_size: int = 500
    # How long a rotation waits for rows held by other transactions before it reports
    # itself unfinished (it is resumed by the next retry or the periodic job).
    rotation_settle_seconds: float = Field(default=30.0, ge=0)
    # How often an interrupted rotation is looked for and resumed.
    rotation_resume_seconds: Seconds = 60.0
    # Documents (SubmitKyc calls, upload streams) this process receives and seals at once;
    # beyond, a call is refused RESOURCE_EXHAUSTED KYC_BUSY (retry in a second). Each holds a
    # file of the cap several times over (the message, the fingerprint's copy, the sealed
    # copy, the driver's parameter: ~50 MiB at 10 MiB): 8 fit the 768 MiB the k8s manifest
    # gives the pod.
    max_documents_in_flight: int = Field(default=8, ge=1, le=1000)

    @field_validator("document_max_bytes")
    @classmethod
    def _cap_in_range(cls, value: int) -> int:
        if not 1024 <= value <= 64 * _MiB:
            raise ValueError("must be between 1 KiB and 64 MiB")
        return value

    @field_validator("upload_chunk_max_bytes")
    @classmethod
    def _chunk_in_range(cls, value: int) -> int:
        if not 1024 <= value <= _MiB:
            raise ValueError("must be between 1 KiB and 1 MiB")
        return value

    @field_validator("rotation_batch_size")
    @classmethod
    def _batch_in_range(cls, value: int) -> int:
        if not 1 <= value <= 10_000:
            raise ValueError("must be between 1 and 10000")
        return value

    @field_validator("outbox_max_attempts")
    @classmethod
    def _attempts_in_range(cls, value: int) -> int:
        if not 20 <= value <= 100_000:
            raise ValueError("must be between 20 and 100000")
        return value

    @field_validator("idempotency_retention_hours")
    @classmethod
    def _keeps_a_day(cls, value: int) -> int:
        if value < 24:
            raise ValueError("must be at least 24 (hours)")
        return value

    @model_validator(mode="after")
    def _messages_hold_a_file(self) -> Self:
        if self.max_message_bytes < self.document_max_bytes + _MESSAGE_OVERHEAD:
            raise ValueError(
                "max_message_bytes must exceed document_max_bytes by at least 64 KiB "
                "(SubmitKyc and AdminGetKycSubmission carry a whole file)"
            )
        return self

    def key_encryption_key_for(self, key_id: str) -> bytes:
        """The KEK named `key_id` (HKDF of the root key); never stored anywhere."""
        return self.derived_key(f"kyc-kek/{key_id}")

    @property
    def document_hash_key(self) -> bytes:
        return self.derived_key("kyc-document-hash")
