"""Persistence: models, migrations, repositories, the unit of work, reads."""
