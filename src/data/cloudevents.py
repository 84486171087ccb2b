"""CloudEvents 1.0 (structured JSON) for what we produce, and the one wire shape of a
transition: the audit event's `data` (CONTRACT section 6), which live subscribers and stored
idempotent results read back with `transition_from_data`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from uuid_utils import uuid4

from customer360.lifecycle import Source, Transition

AUDIT_TOPIC = "audit.lifecycle.updated"
SOURCE = "urn:c360:lifecycle-gateway"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def transition_data(t: Transition) -> dict[str, Any]:
    return {
        "transition_id": str(t.id),
        "customer_id": str(t.customer_id),
        "from_stage": t.from_stage,
        "to_stage": t.to_stage,
        "changed_at": iso(t.changed_at),
        "changed_by": t.changed_by,
        "reason_code": t.reason_code,
        "source": t.source.value,
        "version": t.version,
    }


def transition_from_data(
    tenant_id: str, data: Mapping[str, Any], config_version: int = 0
) -> Transition:
    return Transition(
        id=uuid.UUID(data["transition_id"]),
        tenant_id=tenant_id,
        customer_id=uuid.UUID(data["customer_id"]),
        from_stage=data["from_stage"],
        to_stage=data["to_stage"],
        changed_at=datetime.fromisoformat(data["changed_at"]),
        changed_by=data["changed_by"],
        reason_code=data["reason_code"],
        source=Source(data["source"]),
        version=data["version"],
        config_version=config_version,
    )


def audit_event(t: Transition) -> dict[str, Any]:
    # Built for every change of a bulk write: the time and the customer are formatted once,
    # and the id comes from uuid-utils (a tenth of the standard library's uuid4 and str).
    data = transition_data(t)
    return {
        "specversion": "1.0",
        "id": str(uuid4()),
        "source": SOURCE,
        "type": AUDIT_TOPIC,
        "time": data["changed_at"],
        "datacontenttype": "application/json",
        "subject": data["customer_id"],
        "tenantid": t.tenant_id,
        "data": data,
    }
