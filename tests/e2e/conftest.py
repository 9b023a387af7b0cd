"""Servers for end-to-end tests: a real uvicorn process per backend, over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, start_server
from tests.gallery.conftest import _create_database, pg_admin_url  # noqa: F401 - fixture reuse


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_home: Path) -> Iterator[Server]:
    """The service on its embedded defaults (SQLite, in-process rate limits)."""
    srv = start_server(tmp_path_factory.mktemp("srv"), model_home,
                       FACESOCIAL_RATE_LIMIT_LOGIN_PER_MINUTE="30",
                       FACESOCIAL_MAX_UPLOAD_BYTES=str(3 * 1024 * 1024))
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gallery_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   model_home: Path) -> Iterator[Server]:
    """The service on SQLite (in-process index) and on PostgreSQL + pgvector."""
    env: dict[str, str] = {}
    if request.param == "postgresql":
        # a fresh database in the session's private server (deleted with it at the end)
        env["FACESOCIAL_DATABASE_URL"] = _create_database(request.getfixturevalue("pg_admin_url"))
    srv = start_server(tmp_path_factory.mktemp(f"gal-{request.param}"), model_home, **env)
    yield srv
    srv.stop()
