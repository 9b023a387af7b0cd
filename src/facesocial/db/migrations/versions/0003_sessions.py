"""Continuous-authentication clients and their non-allow decisions.

``session_clients`` binds a client id to an enrolled identity and to the API key
that client connects with, and keeps its administrative state (active, paused,
blocked). ``session_decisions`` is the audit trail of every decision other than
``allow``: the scores, models and policy version behind it and where its
evidence (the frame as JPEG and a JSON record) is stored.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "session_clients",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("identity_id", sa.String(32),
                  sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text, nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
    )
    op.create_index("ix_session_clients_identity_id", "session_clients", ["identity_id"])
    op.create_table(
        "session_decisions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("frame", sa.Integer, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("scores", JSON, nullable=False),
        sa.Column("models", JSON, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("evidence", sa.Text, nullable=True),
    )
    op.create_index("ix_session_decisions_client_at", "session_decisions", ["client_id", "at"])
    op.create_index("ix_session_decisions_at", "session_decisions", ["at"])


def downgrade() -> None:
    for table in ("session_decisions", "session_clients"):
        op.drop_table(table)
