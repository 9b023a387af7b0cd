"""Alembic migrations, shipped in the package; run them with ``facesocial.db.session.upgrade``."""
