"""Field permissions, declared next to the fields they guard."""

from __future__ import annotations

from typing import Any, ClassVar

from graphql import GraphQLError
from strawberry.permission import BasePermission
from strawberry.types import Info

from customer360.auth.principal import Permission


class Forbidden(GraphQLError):
    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "FORBIDDEN"})


class _Needs(BasePermission):
    permission: ClassVar[Permission]
    error_class = Forbidden

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        allowed: bool = info.context.principal.can(self.permission)
        if not allowed:
            self.message = f"Needs {self.permission.value}"
        return allowed


class CanViewLifecycle(_Needs):
    permission = Permission.VIEW_LIFECYCLE


class CanViewHistory(_Needs):
    permission = Permission.VIEW_HISTORY


class IsTenantAdmin(BasePermission):
    """TENANT_ADMIN, or SUPER_ADMIN (in the tenant its X-Tenant-Id names)."""

    error_class = Forbidden
    message = "Needs ROLE_TENANT_ADMIN (or ROLE_SUPER_ADMIN)"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        allowed: bool = info.context.principal.is_tenant_admin
        return allowed
