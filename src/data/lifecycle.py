"""Persistence for the one write path: locks, history, counts, outbox, idempotency."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from customer360.lifecycle import (
    DEFAULT_CONFIG,
    ChangeResult,
    CustomerState,
    StageConfig,
    Transition,
    config_from_json,
)
from customer360.lifecycle.commands import IdempotencyRecord, StoredResult
from customer360.tracing import TraceContext, outbox_trace_context

from . import outbox
from .chain import STAGE_SUMMARY
from .cloudevents import AUDIT_TOPIC, audit_event, transition_data, transition_from_data
from .retention import IDEMPOTENCY_HOURS
from .scope import TENANT_SQL
from .statements import Executor, Statement

# Documents come back as text and are parsed here: the same on asyncpg's own connections
# (which hand jsonb out as text) and on SQLAlchemy's (which would parse it themselves).
_CONFIG = Statement.of(
    "SELECT version, config::text, updated_at, updated_by FROM stage_configs "
    "WHERE tenant_id = :t ORDER BY version DESC LIMIT 1"
)
_TENANT = Statement.of(f"SELECT {TENANT_SQL}")
# Stage changes share the tenant's config lock; saving a configuration takes it alone,
# so no change can slip a customer into a stage that a concurrent save removes.
# Every write path takes one of them first, so the same statement also sets the transaction's
# row-level security tenant (data/scope.py) at no extra round trip.
_CONFIG_SHARED = Statement.of(
    f"SELECT {TENANT_SQL}, pg_advisory_xact_lock_shared(hashtextextended('stage-config:' || :t, 0))"
)
_CONFIG_EXCLUSIVE = Statement.of(
    f"SELECT {TENANT_SQL}, pg_advisory_xact_lock(hashtextextended('stage-config:' || :t, 0))"
)
# What a batch decides on, in one round trip (migrations 0012, 0013): the tenant's row-level
# security setting, the configuration's shared lock unless held (the lock of _CONFIG_SHARED),
# the (actor, key) locks, then, under a snapshot taken after them, the configuration unless
# held, the customers locked in id order and the first results of those keys.
_PREPARE = Statement.of(
    "SELECT * FROM c360_prepare_batch(:t, CAST(:ids AS uuid[]), CAST(:subjects AS text[]), "
    "CAST(:keys AS text[]), :hours, :config)"
)


# One statement, one round trip: the queued change, current status, keys.
RECORD_SQL = f"""
WITH t AS (
  SELECT * FROM unnest(
    CAST(:ids AS uuid[]), CAST(:customer_ids AS uuid[]), CAST(:versions AS int[]),
    CAST(:froms AS text[]), CAST(:tos AS text[]), CAST(:ats AS timestamptz[]),
    CAST(:bys AS text[]), CAST(:reasons AS text[]), CAST(:sources AS text[]),
    CAST(:config_versions AS int[]), CAST(:events AS jsonb[]),
    CAST(:traceparents AS text[]), CAST(:tracestates AS text[])
  ) AS t(id, customer_id, version, from_stage, to_stage, changed_at, changed_by,
         reason_code, source, config_version, event, traceparent, tracestate)
),
queued AS (
  -- The whole change, for the sealer (data/chain.py, migration 0017), which inserts its
  -- history row linked and its audit event's outbox row sealed. That row's id is drawn now:
  -- the cache generation the relay will set for the customer once it has published it.
  INSERT INTO history_unsealed (history_id, tenant_id, customer_id, version, from_stage,
                                to_stage, changed_at, changed_by, reason_code, source,
                                config_version, {outbox.QUEUED_EVENT})
  SELECT id, :t, customer_id, version, from_stage, to_stage, changed_at, changed_by,
         reason_code, source, config_version, {outbox.NEXT_ID}, :topic, customer_id::text,
         event, traceparent, tracestate
  FROM t ORDER BY t.customer_id, t.version
  RETURNING key, outbox_id
),
latest AS (
  SELECT DISTINCT ON (customer_id) * FROM t ORDER BY customer_id, version DESC
),
cur AS (
  UPDATE customers c SET stage = l.to_stage, stage_entered_at = l.changed_at,
         lifecycle_updated_at = l.changed_at, lifecycle_updated_by = l.changed_by,
         reason_code = l.reason_code, source = l.source, version = l.version,
         updated_at = GREATEST(c.updated_at, l.changed_at)
  FROM latest l WHERE c.tenant_id = :t AND c.id = l.customer_id
),
keys AS (
  INSERT INTO idempotency_keys (tenant_id, subject, key, fingerprint, result)
  SELECT :t, k.subject, k.key, k.fingerprint, k.result
  FROM unnest(CAST(:k_subjects AS text[]), CAST(:k_keys AS text[]),
              CAST(:k_fingerprints AS text[]), CAST(:k_results AS jsonb[]))
       AS k(subject, key, fingerprint, result)
  ON CONFLICT (tenant_id, subject, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result, created_at = now()
    WHERE idempotency_keys.created_at <= now() - make_interval(hours => :hours)
)
-- Each customer's newest event's outbox id: the cache generation this process waits for
-- before serving that customer from cache again (read-your-writes). No tenant-wide row or
-- lock is held to this transaction's end, and no NOTIFY inside it (data/chain.py).
SELECT key, max(outbox_id) AS generation FROM queued GROUP BY key
"""  # noqa: S608 (module constants only)
_RECORD = Statement.of(RECORD_SQL)


def result_to_json(r: ChangeResult) -> str:
    """An idempotent first result, kept for replays: the transition in its wire shape."""
    t = r.transition
    transition = None
    if t is not None:
        transition = {
            **transition_data(t),
            "tenant_id": t.tenant_id,
            "config_version": t.config_version,
        }
    return orjson.dumps(
        {
            "customer_id": str(r.customer_id),
            "stage": r.stage,
            "version": r.version,
            "updated_at": r.updated_at.isoformat(),
            "transition": transition,
        }
    ).decode()


def result_from_json(doc: dict[str, Any]) -> ChangeResult:
    cid = uuid.UUID(doc["customer_id"])
    t = doc["transition"]
    transition = None
    if t is not None:
        if "transition_id" not in t:  # kept before the wire shape was shared (24 h at most)
            t = {**t, "transition_id": t["id"], "customer_id": str(cid)}
        transition = transition_from_data(t["tenant_id"], t, t["config_version"])
    return ChangeResult(
        cid, doc["stage"], doc["version"], datetime.fromisoformat(doc["updated_at"]), transition
    )


async def load_stage_config(ex: Executor, tenant_id: str) -> StageConfig:
    rows = await ex.rows(_CONFIG, {"t": tenant_id})
    if not rows:
        return DEFAULT_CONFIG
    version, config, updated_at, updated_by = rows[0]
    return config_from_json(
        orjson.loads(config), version=version, updated_at=updated_at, updated_by=updated_by
    )


_CAUSES = Statement.of(
    "INSERT INTO history_causes (tenant_id, history_id, event_source, event_id, event_type) "
    "SELECT :t, h, :source, :id, :type FROM unnest(CAST(:hs AS uuid[])) h ON CONFLICT DO NOTHING"
)
_SAVE_CONFIG = Statement.of(
    "INSERT INTO stage_configs (tenant_id, version, config, updated_at, updated_by) "
    "VALUES (:t, :v, CAST(:c AS jsonb), :at, :by)"
)
_POPULATIONS = Statement.of(STAGE_SUMMARY)


class SqlLifecycleRepository:
    """The write path's statements, on whichever connection the unit of work holds."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self.recorded: list[Transition] = []
        # Customer -> the outbox row id its cache generation becomes once relayed.
        self.generations: dict[uuid.UUID, int] = {}
        # Configurations read under this transaction's lock: they cannot change until commit.
        self._held: dict[str, StageConfig] = {}
        self._tenant: str | None = None
        # Whether anything was written: a unit of work with nothing to keep rolls back, which
        # unlike a commit waits for no WAL flush.
        self.written = False

    async def stage_config(self, tenant_id: str, *, for_write: bool = False) -> StageConfig:
        held = self._held.get(tenant_id)
        if held is not None:
            return held
        if not for_write:
            if self._tenant is None:
                await self.ex.run(_TENANT, {"t": tenant_id})
            self._one_tenant(tenant_id)
            return await load_stage_config(self.ex, tenant_id)
        self._one_tenant(tenant_id)
        await self.ex.run(_CONFIG_SHARED, {"t": tenant_id})
        config = self._held[tenant_id] = await load_stage_config(self.ex, tenant_id)
        return config

    async def lock_config(self, tenant_id: str) -> None:
        self._one_tenant(tenant_id)
        await self.ex.run(_CONFIG_EXCLUSIVE, {"t": tenant_id})

    def _one_tenant(self, tenant_id: str) -> None:
        # A transaction is scoped to one tenant (row-level security): never switch midway.
        if self._tenant is None:
            self._tenant = tenant_id
        elif self._tenant != tenant_id:
            raise RuntimeError("one unit of work serves one tenant")

    async def stage_populations(self, tenant_id: str) -> dict[str, int]:
        rows = await self.ex.rows(_POPULATIONS, {"t": tenant_id})
        return {stage: int(n) for stage, n in rows}

    async def save_config(self, tenant_id: str, config: StageConfig) -> None:
        params = {
            "t": tenant_id,
            "v": config.version,
            "c": orjson.dumps(config.to_json()).decode(),
            "at": config.updated_at,
            "by": config.updated_by,
        }
        await self.ex.run(_SAVE_CONFIG, params)
        self._held[tenant_id] = config
        self.written = True

    async def prepare_changes(
        self, tenant_id: str, ids: Sequence[uuid.UUID], keys: Sequence[tuple[str, str]]
    ) -> tuple[StageConfig, dict[uuid.UUID, CustomerState], dict[tuple[str, str], StoredResult]]:
        """One round trip: the locks (with the row-level security tenant), then the rows."""
        config = self._held.get(tenant_id)
        if config is None:
            self._one_tenant(tenant_id)
        pairs = sorted(set(keys))
        params = {
            "t": tenant_id,
            "subjects": [s for s, _ in pairs],
            "keys": [k for _, k in pairs],
            "ids": list(ids),
            "hours": IDEMPOTENCY_HOURS,
            "config": config is None,
        }
        rows = await self.ex.rows(_PREPARE, params)
        states: dict[uuid.UUID, CustomerState] = {}
        stored: dict[tuple[str, str], StoredResult] = {}
        for kind, version, doc, updated_at, by, cid, stage, entered_at, *first in rows:
            if kind == "customer":
                states[cid] = CustomerState(cid, stage, version, entered_at, updated_at)
            elif kind == "key":
                subject, key, fp, result = first
                stored[(subject, key)] = StoredResult(fp, result_from_json(orjson.loads(result)))
            else:
                config = config_from_json(
                    orjson.loads(doc), version=version, updated_at=updated_at, updated_by=by
                )
        if config is None:
            config = DEFAULT_CONFIG
        self._held[tenant_id] = config
        return config, states, stored

    async def record(
        self,
        tenant_id: str,
        transitions: Sequence[Transition],
        idempotency: Sequence[IdempotencyRecord],
    ) -> None:
        ts = transitions
        self.recorded.extend(ts)
        self.written = True
        # Where each change began: its command's origin (the request that asked, when several
        # requests share this batch), else the span it is written under (a consumed event's).
        # The audit event joins that trace. None, and so NULL, when tracing is off.
        here = outbox_trace_context()
        traces = [x.origin if isinstance(x.origin, TraceContext) else here for x in ts]
        rows = await self.ex.rows(
            _RECORD,
            {
                "t": tenant_id,
                "hours": IDEMPOTENCY_HOURS,
                "topic": AUDIT_TOPIC,
                "ids": [x.id for x in ts],
                "customer_ids": [x.customer_id for x in ts],
                "versions": [x.version for x in ts],
                "froms": [x.from_stage for x in ts],
                "tos": [x.to_stage for x in ts],
                "ats": [x.changed_at for x in ts],
                "bys": [x.changed_by for x in ts],
                "reasons": [x.reason_code for x in ts],
                "sources": [x.source.value for x in ts],
                "config_versions": [x.config_version for x in ts],
                "events": [orjson.dumps(audit_event(x)).decode() for x in ts],
                "traceparents": [x.traceparent if x else None for x in traces],
                "tracestates": [x.tracestate if x else None for x in traces],
                "k_subjects": [k.actor for k in idempotency],
                "k_keys": [k.key for k in idempotency],
                "k_fingerprints": [k.fingerprint for k in idempotency],
                "k_results": [result_to_json(k.result) for k in idempotency],
            },
        )
        for key, generation in rows:
            self.generations[uuid.UUID(key)] = int(generation)

    async def note_cause(self, tenant_id: str, source: str, event_id: str, type_: str) -> None:
        """The consumed event behind every stage change recorded so far in this unit of work
        (migration 0009): a data export names it."""
        ids = [t.id for t in self.recorded if t.tenant_id == tenant_id]
        if ids:
            params = {"t": tenant_id, "source": source, "id": event_id, "type": type_, "hs": ids}
            await self.ex.run(_CAUSES, params)
