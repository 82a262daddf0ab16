"""Alembic migrations for Postroom's schema (run with ``postroom db upgrade``)."""
