"""Tokens, principals, permissions and tenant scoping."""
