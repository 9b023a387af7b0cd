"""Job deployments: a real API process (uvicorn over loopback) and, for the Celery executor,
real `facesocial worker` processes on a real Redis. Used by the tests and bench/batch.py.

Every deployment has its own data directory (SQLite, spool) and its own Redis key prefix,
removed at the end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.e2e.server import Server, start_server

REDIS_URL = os.environ.get("FACESOCIAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENDED = ("completed", "failed", "cancelled")


@dataclass
class Deployment:
    executor: str
    workdir: Path
    model_home: Path
    data: Path
    env: dict[str, str]
    server: Server
    workers: list[subprocess.Popen] = field(default_factory=list)

    # ---------------------------------------------------------------- processes
    def start_worker(self, concurrency: int = 2) -> subprocess.Popen:
        log = open(self.workdir / f"worker-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "facesocial", "worker", "--concurrency",
                                 str(concurrency), "--log-level", "INFO"],
                                env=self.server.env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGKILL)
                w.wait(timeout=20)

    def kill_processing(self) -> None:
        """kill -9 whatever runs items: the Celery workers, or the API process itself."""
        if self.executor == "celery":
            self.kill_workers()
        else:
            self.server.proc.send_signal(signal.SIGKILL)
            self.server.proc.wait(timeout=20)

    def start_processing(self) -> None:
        if self.executor == "celery":
            self.start_worker()
        else:
            self.restart_server()

    def restart_server(self) -> None:
        """Stop the API process (SIGTERM, as an operator would) and start a new one on the same
        database and spool."""
        self.server.stop()
        self.server = start_server(self.workdir, self.model_home, data_dir=self.data,
                                   **self.env)

    def stop(self) -> None:
        self.kill_workers()
        self.server.stop()
        if self.executor == "celery":
            r = redis.Redis.from_url(REDIS_URL)
            prefix = self.env["FACESOCIAL_REDIS_PREFIX"]
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)

    # ------------------------------------------------------------------- client
    def client(self) -> httpx.Client:
        return self.server.client(headers=self.server.auth())

    def db_rows(self, sql: str, **params: Any) -> list[tuple]:
        """Read the deployment's SQLite database directly (works while the API is down)."""
        from sqlalchemy import create_engine, text

        eng = create_engine(f"sqlite:///{self.data / 'facesocial.db'}")
        try:
            with eng.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), params)]
        finally:
            eng.dispose()


def deploy(executor: str, workdir: Path, model_home: Path, workers: int = 1,
           worker_concurrency: int = 2, **extra: str) -> Deployment:
    """The API on ``executor``; with Celery, ``workers`` worker processes of
    ``worker_concurrency`` threads each. ``extra`` settings (FACESOCIAL_*) win."""
    env = {"FACESOCIAL_BATCH_EXECUTOR": executor, "FACESOCIAL_BATCH_SWEEP_INTERVAL_S": "1",
           "FACESOCIAL_BATCH_RETRY_BASE_S": "0.5"}
    if executor == "celery":
        env.update({"FACESOCIAL_REDIS_URL": REDIS_URL,
                    "FACESOCIAL_REDIS_PREFIX": f"fs-jobs-{uuid.uuid4().hex[:10]}",
                    # a killed worker's items come back after 5 s; live workers look every 1 s
                    "FACESOCIAL_BATCH_VISIBILITY_TIMEOUT_S": "5",
                    "FACESOCIAL_BATCH_RESTORE_INTERVAL_S": "1"})
    else:
        env["FACESOCIAL_BATCH_WORKERS"] = "2"
    env.update(extra)
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    server = start_server(workdir, model_home, data_dir=data, **env)
    dep = Deployment(executor, workdir, model_home, data, env, server)
    if executor == "celery":
        for _ in range(workers):
            dep.start_worker(worker_concurrency)
    return dep


# ---------------------------------------------------------------------- helpers
def wait_job(client: httpx.Client, job_id: str, until: Callable[[dict], bool] | None = None,
             timeout: float = 300.0) -> dict:
    """Poll the job's status until ``until(status)`` (default: the job ended)."""
    cond = until or (lambda st: st["state"] in ENDED)
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/batch/status/{job_id}")
        assert r.status_code == 200, r.text
        st = r.json()
        if cond(st):
            return st
        assert time.monotonic() < deadline, f"job {job_id} did not get there in time: {st}"
        time.sleep(0.2)


def ndjson(client: httpx.Client, job_id: str) -> list[dict]:
    r = client.get(f"/batch/result/{job_id}", params={"format": "ndjson"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def upload(items: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("images", (name, data)) for name, data in items]


def make_zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()
