"""Job kinds, states and the typed records the job modules pass around."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

KINDS = ("batch", "video_deepfake", "gallery_import")

# job states
QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "queued", "running", "completed", "failed", "cancelled")
ACTIVE_JOB = (QUEUED, RUNNING)
ENDED_JOB = (COMPLETED, FAILED, CANCELLED)

# item states
PENDING, DONE = "pending", "done"
OPEN_ITEM = (PENDING, RUNNING)
TERMINAL_ITEM = (DONE, FAILED, CANCELLED)
ITEM_STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)

#: tasks a batch job may run: the engine's, plus 1:N recognition against the gallery
BATCH_TASKS = ("detect", "embed", "antispoof", "demographics", "deepfake", "objects",
               "recognize")


@dataclass(frozen=True, slots=True)
class NewItem:
    """An input spooled for a job, before it has a row."""

    name: str  # file name (or path inside the zip) as the client gave it
    input_path: str  # relative to the spool root
    sha256: str
    size: int
    label: str | None = None  # gallery import: the identity name


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery of an item came to."""

    state: str  # done | failed | cancelled | duplicate | retry
    retry_in: float | None = None  # seconds, when state == "retry"
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    id: str
    kind: str
    state: str
    executor: str
    tasks: tuple[str, ...]
    total: int
    counts: dict[str, int]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    estimated_finish_at: datetime | None
    items_per_second: float | None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ENDED_JOB

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        finished = self.counts.get(DONE, 0) + self.counts.get(FAILED, 0)
        return {"id": self.id, "kind": self.kind, "state": self.state,
                "executor": self.executor, "tasks": list(self.tasks), "total": self.total,
                "counts": {s: self.counts.get(s, 0) for s in ITEM_STATES},
                "progress": round(finished / self.total, 4) if self.total else 1.0,
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at),
                "estimated_finish_at": iso(self.estimated_finish_at),
                "items_per_second": None if self.items_per_second is None
                else round(self.items_per_second, 3),
                "summary": self.summary, "error": self.error}
