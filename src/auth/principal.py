"""Who is asking, in which tenant, and what they may do (CONTRACT section 2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    VIEW_LIFECYCLE = "VIEW_LIFECYCLE"
    UPDATE_LIFECYCLE = "UPDATE_LIFECYCLE"
    VIEW_HISTORY = "VIEW_HISTORY"
    CONFIGURE_STAGES = "CONFIGURE_STAGES"


SUPER_ADMIN = "ROLE_SUPER_ADMIN"
TENANT_ADMIN = "ROLE_TENANT_ADMIN"
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "ROLE_CUSTOMER_VIEWER": frozenset({Permission.VIEW_LIFECYCLE}),
    "ROLE_ACCOUNT_MANAGER": frozenset(
        {Permission.VIEW_LIFECYCLE, Permission.UPDATE_LIFECYCLE, Permission.VIEW_HISTORY}
    ),
    TENANT_ADMIN: frozenset(Permission),
    SUPER_ADMIN: frozenset(Permission),
}


def permissions_for(roles: tuple[str, ...]) -> frozenset[Permission]:
    out: set[Permission] = set()
    for role in roles:
        out |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    home_tenant: str
    roles: tuple[str, ...]
    permissions: frozenset[Permission]
    # The tenant this request acts in: the token's, or a super admin's X-Tenant-Id.
    tenant_id: str
    expires_at: int

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def is_super_admin(self) -> bool:
        return SUPER_ADMIN in self.roles

    @property
    def is_tenant_admin(self) -> bool:
        """A tenant's administrator: TENANT_ADMIN, or a super admin acting in the tenant
        (data exports, webhooks)."""
        return TENANT_ADMIN in self.roles or self.is_super_admin


class AuthError(Exception):
    """Refused before execution: 401 (bad or missing token) or 403 (foreign tenant)."""

    def __init__(self, status: int, message: str, *, header_sent: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.header_sent = header_sent

    @property
    def code(self) -> str:
        return "UNAUTHENTICATED" if self.status == 401 else "FORBIDDEN"

    @property
    def metric(self) -> str:
        """Its value of c360_requests_rejected_total{reason}."""
        return "unauthenticated" if self.status == 401 else "forbidden_tenant"

    @property
    def www_authenticate(self) -> str | None:
        if self.status != 401:
            return None
        return 'Bearer error="invalid_token"' if self.header_sent else "Bearer"


def act_in_tenant(principal: Principal, requested: str | None) -> Principal:
    """Apply an X-Tenant-Id header: any tenant for a super admin, one's own for others."""
    if requested is None or requested == "" or requested == principal.tenant_id:
        return principal
    if not principal.is_super_admin:
        raise AuthError(403, "This principal may not act in another tenant")
    return Principal(
        principal.subject,
        principal.home_tenant,
        principal.roles,
        principal.permissions,
        requested,
        principal.expires_at,
    )
