"""create_app(settings) -> FastAPI: the service under /api/v1, OpenAPI docs at /docs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from facesocial import __version__
from facesocial.api import errors
from facesocial.api.middleware import API_PREFIX, RequestContext
from facesocial.api.routes import auth, face, gallery, jobs, sessions, system, ws
from facesocial.api.state import ServiceState
from facesocial.engine import Engine
from facesocial.settings import Settings

log = logging.getLogger(__name__)


def build_state(settings: Settings, engine: Engine | None = None) -> ServiceState:
    """Database (migrated), first admin, engine and gallery: everything the routes use."""
    from facesocial.db.session import make_engine, session_factory, upgrade
    from facesocial.gallery.service import Gallery
    from facesocial.security.tokens import check_secret
    from facesocial.security.users import ensure_first_admin

    check_secret(settings)  # refuses production with the default secret
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings)
    upgrade(db)
    sessions = session_factory(db)
    with sessions() as session:
        ensure_first_admin(session, settings)
    engine = engine or Engine(settings)
    return ServiceState(settings, engine, db, sessions,
                        Gallery(sessions, settings, catalog=engine.catalog))


def create_app(settings: Settings | None = None, *, state: ServiceState | None = None) -> FastAPI:
    settings = settings or Settings()
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = state or await run_in_threadpool(build_state, settings)
        app.state.fs = st
        holder["state"] = st
        if settings.warm_critical:
            await run_in_threadpool(st.engine.manager.warm_up)
        await run_in_threadpool(st.jobs.start)  # resumes jobs a previous run left behind
        await st.auth_sessions.start()
        log.info("facesocial %s ready (database %s)", __version__, st.db_engine.dialect.name)
        try:
            yield
        finally:
            await st.auth_sessions.stop()
            if state is None:
                st.close()

    app = FastAPI(title="FaceSocial AI", version=__version__, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json",
                  description="Self-hosted face analysis: detection, recognition, "
                              "anti-spoofing, deepfakes, demographics, objects.")
    errors.install(app)
    app.add_middleware(RequestContext, metrics=_metrics_proxy(holder))
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"])
    for router in (system.router, auth.router, face.router, gallery.router, jobs.router,
                   sessions.router, ws.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(ws.router)  # /ws/realtime and /ws/session also at the root
    return app


class _metrics_proxy:  # noqa: N801 - behaves like the HttpMetrics of the state built at start
    def __init__(self, holder: dict[str, Any]) -> None:
        self._holder = holder

    def __getattr__(self, name: str) -> Any:
        state = self._holder.get("state")
        if state is None:
            from facesocial.observability.metrics import HttpMetrics

            self._holder.setdefault("early", HttpMetrics())
            return getattr(self._holder["early"], name)
        return getattr(state.http_metrics, name)
