"""What the domain needs from persistence; `customer360.data` provides it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from .commands import CustomerState, IdempotencyRecord, StoredResult, Transition
from .config import StageConfig


class LifecycleRepository(Protocol):
    async def stage_config(self, tenant_id: str, *, for_write: bool = False) -> StageConfig:
        """The tenant's current configuration; `for_write` holds it steady until commit."""
        ...

    async def lock_config(self, tenant_id: str) -> None:
        """Hold the tenant's configuration alone until commit."""
        ...

    async def stage_populations(self, tenant_id: str) -> dict[str, int]: ...

    async def save_config(self, tenant_id: str, config: StageConfig) -> None: ...

    async def prepare_changes(
        self, tenant_id: str, ids: Sequence[UUID], keys: Sequence[tuple[str, str]]
    ) -> tuple[StageConfig, dict[UUID, CustomerState], dict[tuple[str, str], StoredResult]]:
        """What a batch of changes decides on, held steady until commit: the configuration,
        the customers of `ids` (locked; missing ones left out) and the first results of the
        (actor, idempotency key) pairs of `keys`."""
        ...

    async def record(
        self,
        tenant_id: str,
        transitions: Sequence[Transition],
        idempotency: Sequence[IdempotencyRecord],
    ) -> None:
        """Persist history, current status, stage counts and outbox rows for `transitions`."""
        ...
