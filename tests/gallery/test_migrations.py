"""Migrations: an empty database reaches head, a second run is a no-op, schema == models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from facesocial.db.models import Base
from facesocial.db.session import current_revision, engine_for_url, make_engine, upgrade
from facesocial.settings import Settings

TABLES = {"users", "refresh_tokens", "api_keys", "identities", "faces", "audit_log", "jobs",
          "job_items", "gallery_changes", "session_clients", "session_decisions"}
HEAD = "0003"


def test_upgrade_empty_then_idempotent(db_url: str) -> None:
    eng = engine_for_url(db_url)
    try:
        assert current_revision(eng) is None
        upgrade(db_url)  # from a URL string
        assert TABLES <= set(inspect(eng).get_table_names())
        assert current_revision(eng) == HEAD
        upgrade(eng)  # again, from an engine: nothing to do, nothing breaks
        assert current_revision(eng) == HEAD
        with eng.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff  # the migration builds exactly what db/models.py declares
        if eng.dialect.name == "postgresql":
            with eng.connect() as conn:
                assert conn.execute(text("SELECT extname FROM pg_extension "
                                         "WHERE extname = 'vector'")).scalar() == "vector"
                typ = conn.execute(text(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'faces'::regclass AND attname = 'embedding'")).scalar()
            assert typ == "vector"  # untyped: several models, several dimensions
    finally:
        eng.dispose()


def test_make_engine_sqlite_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "new" / "dir")
    eng = make_engine(settings)
    try:
        upgrade(eng)
        assert (tmp_path / "new" / "dir" / "facesocial.db").is_file()
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        eng.dispose()
