"""The transactional outbox: the rows a write inserts in its own transaction for everything
that must follow it after commit (audit events, cache invalidation), and the channel whose
NOTIFY wakes the relays at that commit. Every statement that writes the outbox takes its SQL
from here, as one step of its own single round trip."""

from __future__ import annotations

# LISTENed to by the relays (events/relay.py); a NOTIFY is transactional, sent at commit, and
# repeats within one transaction fold into one.
NOTIFY_CHANNEL = "c360_outbox"
WAKE = f"pg_notify('{NOTIFY_CHANNEL}', '')"

# A row for the caches only (a profile changed): relayed to Redis, not an audit event.
CACHE_TOPIC = "c360.cache.customer"

INSERT = "INSERT INTO outbox (tenant_id, topic, key, payload)"
# An audit event queued with its change (migration 0017): the seal inserts its outbox row,
# sealed, with the W3C trace context of the write that made it (NULL when untraced,
# migration 0008), so the relay publishes into that trace. Its id is drawn by the writer.
QUEUED_EVENT = "outbox_id, topic, key, event, traceparent, tracestate"
NEXT_ID = "nextval('outbox_id_seq')"
