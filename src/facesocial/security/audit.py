"""Audit log: one AuditEvent row per security-relevant action.

Values are clipped to the column sizes (PostgreSQL would reject longer ones,
and an audit write must not fail the action it records); ``details`` is made
JSON-safe and any key that looks like a credential (password, token, secret,
api key, authorization, cookie) has its value replaced by ``"[redacted]"``.
By default :func:`record` commits, so a row for a *denied* action survives the
request being rolled back; pass ``commit=False`` to join the caller's
transaction instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from facesocial.db.models import AuditEvent

OK = "ok"
DENIED = "denied"
ERROR = "error"

REDACTED = "[redacted]"
_SENSITIVE = ("password", "passwd", "secret", "token", "api_key", "apikey", "authorization",
              "cookie", "key_hash", "password_hash")
_MAX_DETAILS_CHARS = 16_000


def _clip(value: object, n: int) -> str | None:
    if value is None:
        return None
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def _is_sensitive(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(s in k for s in _SENSITIVE)


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _is_sensitive(str(k)) else _scrub(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return value


def sanitize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if not details:
        return {}
    clean = json.loads(json.dumps(_scrub(dict(details)), default=str))
    text = json.dumps(clean)
    if len(text) > _MAX_DETAILS_CHARS:
        return {"truncated": True, "preview": text[:_MAX_DETAILS_CHARS]}
    return clean


def record(session: Session, action: str, actor: str | None = None, target: str | None = None,
           request_id: str | None = None, details: Mapping[str, Any] | None = None,
           outcome: str = OK, *, note: str | None = None, commit: bool = True) -> AuditEvent:
    """Write one audit row. ``actor`` e.g. ``"user:<id>"`` / ``"apikey:<prefix>"``."""
    if not action:
        raise ValueError("audit action is required")
    event = AuditEvent(action=_clip(action, 64), actor=_clip(actor, 160),
                       target=_clip(target, 160), request_id=_clip(request_id, 64),
                       details=sanitize_details(details), outcome=_clip(outcome, 16) or OK,
                       note=note)
    session.add(event)
    if commit:
        session.commit()
    else:
        session.flush()
    return event


def list_events(session: Session, *, action: str | None = None, actor: str | None = None,
                target: str | None = None, outcome: str | None = None,
                since: datetime | None = None, limit: int = 100) -> list[AuditEvent]:
    """Newest first."""
    stmt = select(AuditEvent)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    if target is not None:
        stmt = stmt.where(AuditEvent.target == target)
    if outcome is not None:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    stmt = stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(max(1, min(limit, 1000)))
    return list(session.scalars(stmt))
