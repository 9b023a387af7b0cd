"""Database engine, sessions and schema migrations.

``make_engine`` builds the SQLAlchemy engine from settings: SQLite (a file in
``data_dir``, WAL journal, foreign keys on, usable from several threads) or
PostgreSQL (+ pgvector, pooled connections checked before use). ``upgrade``
runs the Alembic migrations shipped inside this package up to head; it needs
no ``alembic.ini`` and is safe to run at every start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from facesocial.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str | URL) -> URL:
    """Pick the installed driver: plain ``postgresql://`` means psycopg 3 here."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _is_memory_sqlite(u: URL) -> bool:
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")  # ignored (stays 'memory') for :memory:
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def engine_for_url(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the per-dialect options facesocial relies on."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"check_same_thread": False}
        if _is_memory_sqlite(u):
            kwargs.setdefault("poolclass", StaticPool)  # one shared in-memory database
        elif u.database:
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, **kwargs)


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    """The application's engine, from ``settings.sqlalchemy_url``."""
    engine = engine_for_url(settings.sqlalchemy_url, **kwargs)
    log.info("database: %s", engine.url.render_as_string(hide_password=True))
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(connection: Any | None = None) -> Any:
    """An Alembic ``Config`` for the migrations shipped in this package (no ini file)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (default: head). Idempotent.

    On PostgreSQL the run holds an advisory lock, so several workers starting
    at once migrate one after the other instead of racing.
    """
    from alembic import command

    own = not isinstance(engine_or_url, Engine)
    engine = engine_for_url(engine_or_url) if own else engine_or_url  # type: ignore[arg-type]
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
        log.info("database schema at %s", current_revision(engine))
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
