"""CloudEvents 1.0 (structured JSON) for what we produce."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from customer360.lifecycle import Transition

AUDIT_TOPIC = "audit.lifecycle.updated"
SOURCE = "urn:c360:lifecycle-gateway"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def audit_event(t: Transition) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": AUDIT_TOPIC,
        "time": iso(t.changed_at),
        "datacontenttype": "application/json",
        "subject": str(t.customer_id),
        "tenantid": t.tenant_id,
        "data": {
            "transition_id": str(t.id),
            "customer_id": str(t.customer_id),
            "from_stage": t.from_stage,
            "to_stage": t.to_stage,
            "changed_at": iso(t.changed_at),
            "changed_by": t.changed_by,
            "reason_code": t.reason_code,
            "source": t.source.value,
            "version": t.version,
        },
    }
