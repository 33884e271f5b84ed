"""Persistence: SQLAlchemy rows, the async engine and migrations."""
