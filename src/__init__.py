"""Customer360 lifecycle gateway."""
