"""Evidence of non-allow decisions: the frame as JPEG and a JSON record, kept for a while.

Layout: ``{root}/{YYYY-MM-DD}/{client}/{decision id}.jpg`` and ``.json``. The JPEG
is the frame exactly as the client sent it when that was a JPEG, otherwise the
decoded frame re-encoded. Files are written to a temporary name and renamed,
so a reader never sees half a record. :meth:`EvidenceStore.purge` removes the
days older than the retention period.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jpeg_of(frame: bytes, rgb: np.ndarray, quality: int) -> bytes:
    if frame[:3] == b"\xff\xd8\xff":
        return frame
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - a decoded RGB frame always encodes
        raise RuntimeError("could not encode the evidence frame")
    return buf.tobytes()


class EvidenceStore:
    def __init__(self, root: Path, retention_s: float) -> None:
        self.root = Path(root)
        self.retention_s = retention_s

    def save(self, decision_id: str, client_id: str, at: datetime, jpeg: bytes,
             record: dict[str, Any]) -> str:
        """Write the frame and its record; returns the path relative to the root."""
        folder = self.root / at.strftime("%Y-%m-%d") / _SAFE.sub("_", client_id)[:64]
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"{decision_id}.jpg", jpeg)
        _write(folder / f"{decision_id}.json",
               json.dumps(record, indent=1, default=str).encode())
        return str((folder / decision_id).relative_to(self.root))

    def files(self, rel: str) -> tuple[Path, Path]:
        base = (self.root / rel).resolve()
        if self.root.resolve() not in base.parents:
            raise ValueError(f"evidence path {rel!r} is outside the store")
        return base.with_suffix(".jpg"), base.with_suffix(".json")

    def purge(self, now: datetime | None = None) -> int:
        """Remove the days older than the retention period; returns how many records went."""
        if not self.root.exists():
            return 0
        cutoff = ((now or datetime.now(UTC)) - timedelta(seconds=self.retention_s)).date()
        removed = 0
        for day in self.root.iterdir():
            try:
                when = datetime.strptime(day.name, "%Y-%m-%d").date()
            except ValueError:
                continue
            if when < cutoff:
                removed += sum(1 for _ in day.rglob("*.json"))
                shutil.rmtree(day, ignore_errors=True)
        return removed
