"""SessionService: continuous-authentication clients, live sessions and their decisions.

Administrators register a client (``client_id``), bound to an enrolled identity; the
client gets an API key of its own (shown once) and connects to ``/ws/session`` with
both. For each frame the service measures it (:mod:`.analyzer`), the client's policy
state decides (:mod:`.policy`), and every decision other than allow is kept: the frame
as JPEG and a JSON record in the evidence store, and a row in ``session_decisions``.
Repeated sign-outs within the policy's window block the client: its state becomes
``blocked`` in the database and every process closes its sessions (registry event).

Frames run on the session's pipeline thread (:mod:`.capacity`); everything that
touches the socket stays on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from facesocial.db.models import SessionClient, SessionDecision, new_id, utcnow
from facesocial.errors import (
    ClientBlocked,
    Conflict,
    InvalidCredentials,
    InvalidInput,
    NotFound,
)
from facesocial.gallery import repository as repo
from facesocial.realtime.connection import CLOSE_BLOCKED, CLOSE_REPLACED, FrameConnection, Inbound
from facesocial.security.apikeys import authenticate_api_key, create_api_key
from facesocial.sessions.analyzer import FrameAnalyzer, Reference
from facesocial.sessions.capacity import Pipeline, PipelinePool
from facesocial.sessions.evidence import EvidenceStore, jpeg_of
from facesocial.sessions.policy import (
    ALLOW,
    BLOCK,
    SIGN_OUT,
    IdentityTrack,
    Policy,
    PolicyState,
)
from facesocial.sessions.registry import Registry, make_registry
from facesocial.settings import Settings

log = logging.getLogger(__name__)

STATES = ("active", "paused", "blocked")
ACTIONS = {"active": "unblock", "paused": "pause", "blocked": "block"}  # audit action names
#: models a session pipeline uses, placed through the model manager when it starts
SESSION_TASKS = ("face_detection", "face_embedding", "object_detection")

Audit = Callable[[str, str | None, str | None, dict[str, Any]], None]


@dataclass
class LiveSession:
    id: str
    client_id: str
    identity_id: str
    conn: FrameConnection
    pipeline: Pipeline
    policy: PolicyState
    ref: Reference
    paused: bool = False
    track: IdentityTrack = field(default_factory=IdentityTrack)
    started: float = field(default_factory=time.time)
    frames: int = 0
    decisions: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.id, "client_id": self.client_id,
                "identity_id": self.identity_id, "pipeline": self.pipeline.index,
                "started_at": self.started, "frames": self.frames, "paused": self.paused,
                "decisions": dict(self.decisions), **self.conn.stats()}


def client_dict(c: SessionClient) -> dict[str, Any]:
    return {"client_id": c.id, "name": c.name, "identity_id": c.identity_id, "state": c.state,
            "state_reason": c.state_reason, "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat()}


def decision_dict(d: SessionDecision) -> dict[str, Any]:
    return {"id": d.id, "at": d.at.isoformat(), "client_id": d.client_id,
            "session_id": d.session_id, "frame": d.frame, "decision": d.decision,
            "reasons": d.reasons, "scores": d.scores, "models": d.models,
            "policy_version": d.policy_version, "evidence": d.evidence}


class SessionService:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], engine: Any, *,
                 registry: Registry | None = None, policy: Policy | None = None,
                 audit: Audit | None = None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.engine = engine
        self.policy = policy or Policy.load(settings.session_policy_file)
        self.analyzer = FrameAnalyzer(engine, self.policy, sessions)
        self.evidence = EvidenceStore(settings.evidence_path, settings.evidence_retention_s)
        self.pool = PipelinePool(settings.session_pipelines, settings.sessions_per_pipeline,
                                 settings.session_queue_timeout_s, self._place_models)
        self.registry = registry or make_registry(settings.redis_url, settings.redis_prefix)
        self._audit = audit or (lambda *a: None)
        self._local: dict[str, LiveSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.registry.subscribe(self._on_event_threadsafe)
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for live in list(self._local.values()):
            await live.conn.close(1001, "server_shutdown")
        self.pool.close()
        self.registry.close()

    def _place_models(self) -> dict[str, str]:
        """Load a new pipeline's models through the manager; their devices as placed."""
        out: dict[str, str] = {}
        ids = [self.engine.resolve(t).id for t in SESSION_TASKS]
        ids += [i for i in ("antispoof_binary", "antispoof_print_replay")
                if self.engine.installed(i)]
        for model_id in ids:
            try:
                out[model_id] = self.engine.manager.load(model_id).get("device") or "cpu"
            except Exception as exc:  # noqa: BLE001 - the frame path reports it properly
                out[model_id] = f"error: {exc}"[:120]
        return out

    async def _tick(self) -> None:
        """Heartbeat live sessions, re-read their clients' states, purge old evidence."""
        last_purge = 0.0
        while True:
            await asyncio.sleep(self.settings.session_state_check_s)
            try:
                ids = list(self._local)
                await asyncio.to_thread(self.registry.heartbeat, ids)
                states = await asyncio.to_thread(self._client_states,
                                                 {s.client_id for s in self._local.values()})
                for client_id, (state, reason) in states.items():
                    await self._apply(client_id, state, reason)
                if time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    await asyncio.to_thread(self.purge)
            except Exception:  # noqa: BLE001 - try again next tick
                log.exception("session housekeeping failed")

    def _client_states(self, client_ids: set[str]) -> dict[str, tuple[str, str | None]]:
        if not client_ids:
            return {}
        with self.sessions() as s:
            return {c.id: (c.state, c.state_reason) for c in s.scalars(
                select(SessionClient).where(SessionClient.id.in_(client_ids)))}

    def purge(self) -> dict[str, int]:
        """Evidence files and decision rows older than the retention period."""
        files = self.evidence.purge()
        cutoff = utcnow() - timedelta(seconds=self.settings.evidence_retention_s)
        with self.sessions.begin() as s:
            rows = s.query(SessionDecision).filter(SessionDecision.at < cutoff).delete()
        return {"evidence_records": files, "decision_rows": int(rows)}

    # ---------------------------------------------------------- events
    def _on_event_threadsafe(self, event: dict[str, Any]) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        client_id = str(event.get("client_id", ""))
        if event.get("replaced_by"):
            act = lambda: self._replace(client_id, str(event["replaced_by"]))  # noqa: E731
        else:
            act = lambda: self._apply(client_id, event.get("state", ""),  # noqa: E731
                                      event.get("reason"))
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(act()))

    async def _replace(self, client_id: str, new_session: str) -> None:
        """The client opened ``new_session`` (here or in another process): its older live
        sessions in this process end, so one client never streams twice at once."""
        for live in [x for x in self._local.values()
                     if x.client_id == client_id and x.id != new_session]:
            await live.conn.send({"type": "replaced", "client_id": client_id,
                                  "session_id": live.id, "replaced_by": new_session})
            await live.conn.close(CLOSE_REPLACED, "session_replaced")
            await asyncio.to_thread(self._audit, "session.replaced", "system", client_id,
                                    {"session_id": live.id, "replaced_by": new_session})

    async def _apply(self, client_id: str, state: str, reason: str | None) -> None:
        for live in [x for x in self._local.values() if x.client_id == client_id]:
            if state == "blocked":
                await live.conn.send({"type": "blocked", "client_id": client_id,
                                      "reason": reason})
                await live.conn.close(CLOSE_BLOCKED, f"client_blocked: {reason or ''}")
            elif state in ("paused", "active") and live.paused != (state == "paused"):
                live.paused = state == "paused"
                await live.conn.send({"type": "status", "state": state, "reason": reason})

    # ---------------------------------------------------------- clients
    def create_client(self, client_id: str, name: str, identity_id: str,
                      actor: str | None) -> dict[str, Any]:
        """Register a client bound to an identity; returns it with its API key (once)."""
        with self.sessions() as s:
            repo.get_identity(s, identity_id)
            if s.get(SessionClient, client_id) is not None:
                raise Conflict(f"client '{client_id}' already exists", client_id=client_id)
            key = create_api_key(s, f"session client {client_id}"[:128], ["session"],
                                 role="service", created_by=actor)
            row = SessionClient(id=client_id, name=name, identity_id=identity_id,
                                api_key_id=key.info.id, state="active")
            s.add(row)
            s.commit()
            out = client_dict(row)
        self._audit("session.client.create", actor, client_id, {"identity_id": identity_id})
        return {**out, "api_key": key.key}

    def _client(self, s: Session, client_id: str) -> SessionClient:
        row = s.get(SessionClient, client_id)
        if row is None:
            raise NotFound(f"client '{client_id[:64]}' not found", resource="client")
        return row

    def get_client(self, client_id: str) -> dict[str, Any]:
        with self.sessions() as s:
            return client_dict(self._client(s, client_id))

    def list_clients(self, offset: int, limit: int, state: str | None = None,
                     ) -> dict[str, Any]:
        with self.sessions() as s:
            stmt = select(SessionClient)
            if state:
                stmt = stmt.where(SessionClient.state == state)
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(stmt.order_by(SessionClient.created_at, SessionClient.id)
                             .offset(offset).limit(limit))
            return {"items": [client_dict(r) for r in rows], "total": int(total),
                    "offset": offset, "limit": limit}

    def set_state(self, client_id: str, state: str, reason: str | None,
                  actor: str | None) -> dict[str, Any]:
        """Block, pause or unblock (active) a client: kept in the database, and every
        process applies it to the sessions it holds now."""
        if state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}", state=state)
        with self.sessions.begin() as s:
            row = self._client(s, client_id)
            before = row.state
            row.state, row.state_reason = state, reason
            out = client_dict(row)
        self.registry.publish({"client_id": client_id, "state": state, "reason": reason})
        self._audit(f"session.client.{ACTIONS[state]}", actor, client_id,
                    {"from": before, "to": state, "reason": reason})
        return out

    def decisions(self, client_id: str | None, offset: int, limit: int) -> dict[str, Any]:
        with self.sessions() as s:
            stmt = select(SessionDecision)
            if client_id:
                stmt = stmt.where(SessionDecision.client_id == client_id)
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(stmt.order_by(SessionDecision.at.desc(), SessionDecision.id)
                             .offset(offset).limit(limit))
            return {"items": [decision_dict(d) for d in rows], "total": int(total),
                    "offset": offset, "limit": limit}

    # ---------------------------------------------------------- connect
    def authenticate(self, client_id: str, api_key: str) -> tuple[SessionClient, Reference]:
        """The client for this id and key (the key must be the client's own), not blocked,
        with its identity's reference embeddings for the current model."""
        with self.sessions() as s:
            key = authenticate_api_key(s, api_key)
            row = s.get(SessionClient, client_id) if len(client_id) <= 64 else None
            if row is None or row.api_key_id != key.id:
                raise InvalidCredentials("unknown client, or not this client's key")
            if row.state == "blocked":
                raise ClientBlocked(f"client '{client_id}' is blocked: {row.state_reason}",
                                    reason=row.state_reason)
            s.expunge(row)
        ref = self.analyzer.reference(row.identity_id, self.analyzer.current_model())
        return row, ref

    async def open(self, client: SessionClient, ref: Reference, conn: FrameConnection,
                   ) -> LiveSession:
        """Admit the session (queueing when full: SystemFull after the timeout)."""
        sid = new_id()
        if self.settings.session_one_per_client:  # before admission: the old one frees its slot
            try:
                await asyncio.to_thread(self.registry.publish,
                                        {"client_id": client.id, "replaced_by": sid})
            except Exception:  # noqa: BLE001 - Redis down: this process still replaces its own
                log.warning("could not announce session %s", sid, exc_info=True)
                await self._replace(client.id, sid)

        async def queued(position: int) -> None:
            await conn.send({"type": "queued", "position": position,
                             "timeout_s": self.pool.queue_timeout_s})

        pipeline = await self.pool.admit(sid, queued)
        live = LiveSession(sid, client.id, client.identity_id, conn, pipeline,
                           PolicyState(self.policy), ref, paused=client.state == "paused")
        self._local[sid] = live
        try:
            await asyncio.to_thread(self.registry.register, sid, {
                "client_id": client.id, "identity_id": client.identity_id,
                "pipeline": pipeline.index, "started_at": live.started})
        except Exception:  # noqa: BLE001 - the registry is for reporting; the session can run
            log.warning("could not register session %s", sid, exc_info=True)
        return live

    async def close(self, live: LiveSession) -> None:
        self._local.pop(live.id, None)
        self.pool.release(live.id)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.registry.unregister, live.id)

    async def analyse(self, live: LiveSession, inbound: Inbound) -> dict[str, Any] | None:
        """One frame on the session's pipeline; a block closes the socket after the reply."""
        assert live.pipeline.executor is not None
        reply = await asyncio.get_running_loop().run_in_executor(
            live.pipeline.executor, self.process_frame, live, inbound)
        if reply.get("decision") == BLOCK:
            await live.conn.send(reply)
            await asyncio.to_thread(self.registry.publish, {
                "client_id": live.client_id, "state": "blocked",
                "reason": reply["block_reason"]})
            await live.conn.close(CLOSE_BLOCKED, f"client_blocked: {reply['block_reason']}")
            return None
        return reply

    # ----------------------------------------------------------- frames
    def process_frame(self, live: LiveSession, inbound: Inbound) -> dict[str, Any]:
        base = {"request_id": inbound.request_id, "frame": inbound.seq,
                "session_id": live.id, "dropped": live.conn.dropped}
        if live.paused:
            return {"type": "status", "state": "paused", **base}
        assert inbound.data is not None
        rgb = self.engine.image(inbound.data)  # limits; bad images raise typed errors
        now = time.monotonic()
        scores, live.ref = self.analyzer.analyze(rgb, live.ref, live.track, now)
        d = live.policy.decide(scores, now)
        decision, reasons, evidence, block_reason = d.decision, list(d.reasons), None, None
        if decision != ALLOW:
            decision, reasons, evidence, block_reason = self._record(
                live, inbound, rgb, scores, decision, reasons, d.to_dict())
        live.frames += 1
        live.pipeline.frames += 1
        live.decisions[decision] += 1
        return {"type": "decision", **base, "decision": decision, "reasons": reasons,
                "raw": d.raw, "raw_reasons": list(d.raw_reasons), "scores": scores.to_dict(),
                "models": list(scores.models), "policy_version": self.policy.version,
                "evidence_id": evidence, "block_reason": block_reason,
                "timings_ms": {k: round(v, 1) for k, v in scores.timings_ms.items()},
                "latency_ms": round((time.monotonic() - inbound.received) * 1000, 1)}

    def _record(self, live: LiveSession, inbound: Inbound, rgb: Any, scores: Any,
                decision: str, reasons: list[str], raw: dict[str, Any],
                ) -> tuple[str, list[str], str, str | None]:
        """Keep a non-allow decision: evidence files, a decision row, and a block when the
        client signed out too often. Returns the final decision, reasons, evidence id and
        the block reason."""
        p = self.policy
        did, at = new_id(), utcnow()
        block_reason = None
        with self.sessions.begin() as s:
            if decision == SIGN_OUT:
                since = at - timedelta(seconds=p.block_window_s)
                before = s.scalar(select(func.count()).select_from(SessionDecision).where(
                    SessionDecision.client_id == live.client_id,
                    SessionDecision.decision.in_((SIGN_OUT, BLOCK)),
                    SessionDecision.at >= since)) or 0
                if before + 1 >= p.block_sign_outs:
                    decision = BLOCK
                    block_reason = (f"{before + 1} sign-outs within {p.block_window_s:g} s "
                                    f"(policy {p.version})")
                    reasons = [*reasons, "repeated_sign_outs"]
                    client = s.get(SessionClient, live.client_id)
                    if client is not None:
                        client.state, client.state_reason = "blocked", block_reason
            record = {"id": did, "at": at.isoformat(), "client_id": live.client_id,
                      "identity_id": live.identity_id, "session_id": live.id,
                      "frame": inbound.seq, "request_id": inbound.request_id,
                      "decision": decision, "reasons": reasons, "smoothing": raw,
                      "scores": scores.to_dict(), "models": list(scores.models),
                      "policy_version": p.version, "policy": p.to_dict()}
            path = self.evidence.save(did, live.client_id, at, jpeg_of(
                inbound.data or b"", rgb, p.evidence_jpeg_quality), record)
            s.add(SessionDecision(id=did, at=at, client_id=live.client_id, session_id=live.id,
                                  frame=inbound.seq, decision=decision, reasons=reasons,
                                  scores=scores.to_dict(), models=list(scores.models),
                                  policy_version=p.version, evidence=path))
        if decision == BLOCK:
            self._audit("session.client.block", "policy", live.client_id,
                        {"reason": block_reason, "decision_id": did})
        return decision, reasons, did, block_reason

    # ----------------------------------------------------------- status
    def live(self) -> list[dict[str, Any]]:
        try:
            return self.registry.live()
        except Exception:  # noqa: BLE001 - Redis down: say what this process knows
            log.warning("registry unavailable; listing this process's sessions only")
            return [x.to_dict() for x in self._local.values()]

    def status(self) -> dict[str, Any]:
        return {"policy_version": self.policy.version,
                "registry": getattr(self.registry, "backend", "?"),
                "this_process": [x.to_dict() for x in self._local.values()],
                **self.pool.status()}

