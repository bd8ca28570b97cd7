"""The transactional outbox: events stored with the change, relayed at least once."""

from vaultpay_common.outbox.backoff import backoff_delay
from vaultpay_common.outbox.model import (
    DeliveryError,
    Handler,
    Outbox,
    OutboxEvent,
    OutboxMessage,
    OutboxStatus,
    PermanentDeliveryError,
    UnknownToThisBuildError,
    encode_payload,
)
from vaultpay_common.outbox.relay import OutboxRelay
from vaultpay_common.outbox.sql import (
    SqlOutbox,
    count_dead_letters,
    delivered_outbox_events_delete,
    list_dead_letters,
    outbox_producer_policy_ddl,
    outbox_producer_policy_drop_ddl,
    outbox_purge_index_ddl,
    outbox_purge_index_drop_ddl,
    outbox_table,
    outbox_table_ddl,
    outbox_table_drop_ddl,
    purge_delivered_outbox_events,
    replay_dead_letter,
)

__all__ = [
    "DeliveryError",
    "Handler",
    "Outbox",
    "OutboxEvent",
    "OutboxMessage",
    "OutboxRelay",
    "OutboxStatus",
    "PermanentDeliveryError",
    "SqlOutbox",
    "UnknownToThisBuildError",
    "backoff_delay",
    "count_dead_letters",
    "delivered_outbox_events_delete",
    "encode_payload",
    "list_dead_letters",
    "outbox_producer_policy_ddl",
    "outbox_producer_policy_drop_ddl",
    "outbox_purge_index_ddl",
    "outbox_purge_index_drop_ddl",
    "outbox_table",
    "outbox_table_ddl",
    "outbox_table_drop_ddl",
    "purge_delivered_outbox_events",
    "replay_dead_letter",
]
