"""Jobs (batch analysis, video deepfake, gallery import) and the gallery change log.

``jobs`` and ``job_items`` hold the whole state of a job, so any API process or
worker can report on it, resume it, or finish it after a restart. An item's
terminal state is written once (a conditional update), which is what makes
re-delivered queue messages harmless.

``gallery_changes`` is an append-only log of the faces each gallery write
touched, in commit order; processes that keep an in-process vector index
(SQLite deployments) replay it to stay in step with writes made elsewhere
(Celery workers, other API processes).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(160), nullable=True),
        sa.Column("tasks", JSON, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("summary", JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("spool_dir", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(160), nullable=True),
        sa.Column("heartbeat_at", _tz(), nullable=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("started_at", _tz(), nullable=True),
        sa.Column("finished_at", _tz(), nullable=True),
        sa.Column("last_progress_at", _tz(), nullable=True),
        sa.Column("inputs_removed_at", _tz(), nullable=True),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_table(
        "job_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("label", sa.String(256), nullable=True),
        sa.Column("input_path", sa.Text, nullable=True),
        sa.Column("input_sha256", sa.String(64), nullable=True),
        sa.Column("input_bytes", sa.Integer, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(160), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("started_at", _tz(), nullable=True),
        sa.Column("finished_at", _tz(), nullable=True),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_item_seq"),
    )
    op.create_index("ix_job_items_job_state", "job_items", ["job_id", "state"])
    op.create_table(
        "gallery_changes",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("face_id", sa.String(32), nullable=False),
        sa.Column("at", _tz(), nullable=False),
        sqlite_autoincrement=True,  # never reuse a seq: readers remember the last one seen
    )


def downgrade() -> None:
    for table in ("gallery_changes", "job_items", "jobs"):
        op.drop_table(table)
