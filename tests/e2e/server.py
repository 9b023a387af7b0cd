"""Start the real service (uvicorn in a subprocess) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ADMIN = ("admin", "admin-password-for-tests")
DEV_SECRET = "e2e-test-secret-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=120, **kw)  # type: ignore[arg-type]

    def token(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> dict[str, str]:
        with self.client() as c:
            r = c.post("/auth/login", json={"username": username, "password": password})
            r.raise_for_status()
            return r.json()

    def auth(self, **kw: str) -> dict[str, str]:
        """Bearer header; the admin's token is reused (logins are rate limited)."""
        if not kw and "admin" in self._tokens:
            return self._tokens["admin"]
        header = {"Authorization": f"Bearer {self.token(**kw)['access_token']}"}
        if not kw:
            self._tokens["admin"] = header
        return header


def start_server(workdir: Path, model_home: Path, data_dir: Path | None = None,
                 **env: str) -> Server:
    port = free_port()
    data = data_dir or workdir / f"data-{port}"
    data.mkdir(parents=True, exist_ok=True)
    full = {**os.environ,
            "FACESOCIAL_MODEL_DIR": str(model_home), "FACESOCIAL_DATA_DIR": str(data),
            "FACESOCIAL_HOST": "127.0.0.1", "FACESOCIAL_PORT": str(port),
            "FACESOCIAL_SECRET_KEY": DEV_SECRET, "FACESOCIAL_ADMIN_USERNAME": ADMIN[0],
            "FACESOCIAL_ADMIN_PASSWORD": ADMIN[1], "FACESOCIAL_INTRA_OP_THREADS": "1",
            "FACESOCIAL_WARM_CRITICAL": "false", "PYTHONUNBUFFERED": "1", **env}
    log = workdir / f"server-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "facesocial", "serve", "--log-level",
                             "warning"], env=full, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/api/v1/system/health", timeout=2).status_code == 200:
                return Server(url, proc, log, full)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start in 90 s:\n{log.read_text()[-3000:]}")
