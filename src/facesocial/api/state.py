"""Everything a running service holds, built once by the app factory and passed down.

No module-level singletons: tests build their own state (and app) per case.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from facesocial.api.cache import ResultCache, make_cache
from facesocial.api.deps import Principal
from facesocial.engine import FACE_TASKS, Engine
from facesocial.observability.logging import request_id_var
from facesocial.observability.metrics import HttpMetrics
from facesocial.security import audit as audit_log
from facesocial.security.ratelimit import RateLimiter, make_rate_limiter
from facesocial.security.tokens import TokenService
from facesocial.settings import Settings

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: Settings, engine: Engine, db_engine: Any,
                 sessions: sessionmaker[Session], gallery: Any,
                 limiter: RateLimiter | None = None, cache: ResultCache | None = None,
                 jobs: Any = None, auth_sessions: Any = None) -> None:
        self.settings = settings
        self.engine = engine
        self.db_engine = db_engine
        self._sessions = sessions
        self.gallery = gallery
        self.tokens = TokenService(settings)
        self.limiter = limiter or make_rate_limiter(settings, prefix=f"{settings.redis_prefix}:rl")
        self.cache: ResultCache = cache or make_cache(settings)
        self.http_metrics = HttpMetrics()
        if jobs is None:
            from facesocial.jobs.service import JobService

            jobs = JobService(settings, sessions, engine, gallery)
        self.jobs = jobs
        if auth_sessions is None:
            from facesocial.sessions.service import SessionService

            auth_sessions = SessionService(settings, sessions, engine, audit=self.audit_as)
        self.auth_sessions = auth_sessions

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def audit(self, action: str, principal: Principal | None, target: str | None,
              details: dict[str, Any], outcome: str = "ok") -> None:
        """Audit rows never break the request they describe; failures are logged."""
        self.audit_as(action, principal.id if principal else None, target, details, outcome)

    def audit_as(self, action: str, actor: str | None, target: str | None,
                 details: dict[str, Any], outcome: str = "ok") -> None:
        """An audit row for an actor named by id (``user:...``, ``apikey:...``, ``policy``)."""
        try:
            with self.session() as session:
                audit_log.record(session, action, actor, target, request_id_var.get(), details,
                                 outcome)
        except Exception:  # noqa: BLE001
            log.exception("could not write audit event %s", action)

    def model_versions(self, tasks: tuple[str, ...], detector: str | None,
                       embedder: str | None) -> list[str]:
        """``id@version`` of the models that would serve ``tasks`` (the cache key part):
        the version the manager runs (a reload changes it), plus the embedding pipeline."""
        e = self.engine
        ids: list[str] = []
        if any(t in FACE_TASKS for t in tasks):
            ids.append(e.resolve("face_detection", detector or e.settings.detector).id)
        emb = e.resolve("face_embedding", embedder or e.settings.embedder).id \
            if "embed" in tasks else None
        if emb:
            ids.append(emb)
        for task, names in (("antispoof", ("antispoof_binary", "antispoof_print_replay")),
                            ("demographics", ("dlib_age", "dlib_gender")),
                            ("deepfake", (e.settings.deepfake_model,)),
                            ("objects", ("yolox_nano",))):
            if task in tasks:
                ids.extend(i for i in names if e.installed(i))
        live = {s["id"]: s["version"] for s in e.manager.status() if s["version"]}
        return [f"{i}@{live.get(i, e.catalog.get(i).version)}"
                + (e.pipeline_suffix(i) if i == emb else "") for i in ids]

    def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            with self.session() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = {"ok": True, "backend": self.db_engine.dialect.name}
        except Exception as exc:  # noqa: BLE001
            checks["database"] = {"ok": False, "error": str(exc)[:200]}
        if self.settings.redis_url:
            try:
                import redis

                redis.Redis.from_url(self.settings.redis_url, socket_timeout=1.0).ping()
                checks["redis"] = {"ok": True}
            except Exception as exc:  # noqa: BLE001
                checks["redis"] = {"ok": False, "error": str(exc)[:200]}
        try:
            det = self.engine.resolve("face_detection")
            emb = self.engine.resolve("face_embedding")
            checks["models"] = {"ok": True, "detector": det.id, "embedder": emb.id}
        except Exception as exc:  # noqa: BLE001
            checks["models"] = {"ok": False, "error": str(exc)[:200]}
        return checks

    def close(self) -> None:
        self.jobs.stop()
        self.engine.close()
        self.db_engine.dispose()
