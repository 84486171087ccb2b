"""OpenAPI 3 description of the REST shim, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from customer360.lifecycle.inputs import MAX_IDEMPOTENCY_KEY, MAX_TEXT

_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [
                        "BAD_USER_INPUT",
                        "UNAUTHENTICATED",
                        "FORBIDDEN",
                        "NOT_FOUND",
                        "CONFLICT",
                        "RATE_LIMITED",
                        "INTERNAL_SERVER_ERROR",
                    ],
                },
                "message": {"type": "string"},
                "details": {"type": "object", "properties": {"reason": {"type": "string"}}},
            },
        },
    },
}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_TENANT = {
    "name": "X-Tenant-Id",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Super admins only: the tenant to act in.",
}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Customer360 lifecycle REST shim", "version": "1.0.0"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {
            "Error": _ERROR,
            "LifecyclePatch": {
                "type": "object",
                "required": ["stage"],
                "properties": {
                    "stage": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
                    "updated_by": {"type": "string", "maxLength": MAX_TEXT},
                    "reason_code": {"type": "string", "nullable": True, "maxLength": MAX_TEXT},
                    "expected_version": {"type": "integer", "minimum": 0},
                },
            },
            "LifecyclePatchResult": {
                "type": "object",
                "required": ["success", "updated_at", "stage", "version"],
                "properties": {
                    "success": {"type": "boolean"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "stage": {"type": "string"},
                    "version": {"type": "integer"},
                },
            },
            "LifecycleStatus": {
                "type": "object",
                "properties": {
                    "customer_id": {"type": "string", "format": "uuid"},
                    "stage": {"type": "string"},
                    "entered_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "updated_by": {"type": "string"},
                    "reason_code": {"type": "string", "nullable": True},
                    "source": {"type": "string", "enum": ["UI", "API", "EVENT_LISTENER", "SYSTEM"]},
                    "version": {"type": "integer"},
                    "allowed_next_stages": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/customers/{id}/lifecycle": {
            "patch": {
                "summary": "Move a customer to another lifecycle stage",
                "parameters": [
                    _ID,
                    _TENANT,
                    {
                        "name": "If-Match",
                        "in": "header",
                        "required": False,
                        # what rest.ETAG accepts, so generated clients send nothing it refuses
                        "schema": {"type": "string", "pattern": r'^\s*(W/)?"[0-9]{1,9}"\s*$'},
                        "description": 'Expected version, e.g. "3"',
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_IDEMPOTENCY_KEY,
                        },
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/LifecyclePatch"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Changed, or already in that stage",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LifecyclePatchResult"}
                            }
                        },
                    },
                    "400": _err(
                        "Malformed request, unknown stage, move not allowed, or reason missing"
                    ),
                    "401": _err("No, bad or expired token"),
                    "403": _err("Permission, tenant or updated_by refused"),
                    "404": _err("No such customer in the caller's tenant"),
                    "409": _err("expected_version is stale"),
                    "412": _err("If-Match is stale"),
                    "413": _err("Body over 1 MiB"),
                    "415": _err("Body is not application/json"),
                    "422": _err("Idempotency-Key reused with a different body"),
                    "429": _err("Rate limit reached"),
                    "500": _err("Unexpected failure"),
                },
            },
            "get": {
                "summary": "Current lifecycle status",
                "parameters": [
                    _ID,
                    _TENANT,
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "Current status",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LifecycleStatus"}
                            }
                        },
                    },
                    "304": {"description": "Unchanged since If-None-Match"},
                    "400": _err("Malformed id"),
                    "401": _err("No, bad or expired token"),
                    "403": _err("Permission or tenant refused"),
                    "404": _err("No such customer in the caller's tenant"),
                    "500": _err("Unexpected failure"),
                },
            },
        }
    },
}
