"""Every ORM model, imported in one place for Alembic and metadata-wide operations."""

from __future__ import annotations


def import_all_models() -> None:
    import app.archive.models
    import app.auth.models
    import app.budget.models
    import app.dialer.models
    import app.results.models  # noqa: F401
