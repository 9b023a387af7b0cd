"""Alembic environment: runs on the connection handed over by ``session.upgrade``.

Without one (the ``alembic`` command line), the URL comes from ``-x url=...``,
the ``sqlalchemy.url`` option, or the facesocial settings.
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import text

from facesocial.db.models import Base

log = logging.getLogger("facesocial.db.migrations")

config = context.config
target_metadata = Base.metadata
ADVISORY_LOCK_KEY = 0x46616365  # "Face": serialises concurrent upgrades on PostgreSQL


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or \
        config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from facesocial.settings import load_settings

    return load_settings().sqlalchemy_url


def _run(connection) -> None:  # noqa: ANN001 - an SQLAlchemy Connection
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    is_pg = connection.dialect.name == "postgresql"
    if is_pg:
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from facesocial.db.session import engine_for_url

    engine = engine_for_url(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
