"""Idempotent state-changing RPCs: keys, the `run_once` helper and the PostgreSQL records."""

from vaultpay_common.idempotency.codec import DataclassCodec, UnsupportedTypeError
from vaultpay_common.idempotency.model import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    IdempotencyRecords,
    ReplyCodec,
    canonical_request_id,
    request_fingerprint,
)
from vaultpay_common.idempotency.service import IdempotentUnitOfWork, run_once
from vaultpay_common.idempotency.sql import (
    IDEMPOTENCY_RETENTION,
    SqlIdempotencyRecords,
    delete_expired_idempotency_records,
    expired_idempotency_records_delete,
    idempotency_lock_key,
    idempotency_service,
    idempotency_service_ddl,
    idempotency_service_drop_ddl,
    idempotency_service_policy_ddl,
    idempotency_service_policy_drop_ddl,
    idempotency_table,
    idempotency_table_ddl,
    idempotency_table_drop_ddl,
    purge_expired_idempotency_records,
    scope_lock_key,
)

__all__ = [
    "IDEMPOTENCY_RETENTION",
    "DataclassCodec",
    "IdempotencyKey",
    "IdempotencyKeyInUseError",
    "IdempotencyKeyReusedError",
    "IdempotencyRecords",
    "IdempotentUnitOfWork",
    "ReplyCodec",
    "SqlIdempotencyRecords",
    "UnsupportedTypeError",
    "canonical_request_id",
    "delete_expired_idempotency_records",
    "expired_idempotency_records_delete",
    "idempotency_lock_key",
    "idempotency_service",
    "idempotency_service_ddl",
    "idempotency_service_drop_ddl",
    "idempotency_service_policy_ddl",
    "idempotency_service_policy_drop_ddl",
    "idempotency_table",
    "idempotency_table_ddl",
    "idempotency_table_drop_ddl",
    "purge_expired_idempotency_records",
    "request_fingerprint",
    "run_once",
    "scope_lock_key",
]
