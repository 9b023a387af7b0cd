"""A small Python client for the facesocial REST API.

```python
from facesocial.client import FaceSocialClient

with FaceSocialClient.login("http://127.0.0.1:8000", "admin", "change-me-please") as fs:
    print(fs.analyze("photo.jpg", tasks="detect,embed,antispoof"))
    job = fs.batch_submit(["a.jpg", "b.jpg"], tasks="detect,embed")
    fs.wait(job["id"])
    for item in fs.batch_stream(job["id"]):
        print(item["name"], item["state"])
```

Errors come back as :class:`ApiError` with the service's stable ``code``.
Authentication is an API key (``X-API-Key``) or a bearer token from
:meth:`FaceSocialClient.login`, refreshed once when it expires.

WebSockets (the ``websockets`` package, synchronous):

```python
with fs.realtime() as stream:                      # /ws/realtime
    reply = stream.analyze(open("frame.jpg", "rb").read(), "face_detection_stream")

with SessionStream.connect(url, "laptop-1", client_key) as session:   # /ws/session
    decision = session.send_frame(jpeg_bytes)       # {"decision": "allow", ...}
```
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

import httpx

API = "/api/v1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ENDED = ("completed", "failed", "cancelled")

ImageLike = str | Path | bytes


class ApiError(Exception):
    """An error answer from the service: HTTP status plus its stable error code."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def _image_bytes(image: ImageLike) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def zip_folder(folder: Path, target: Path) -> int:
    """Store the images under ``folder`` in a zip (paths kept: folders name identities for a
    gallery import); returns how many. Images are already compressed: stored, not deflated."""
    n = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and \
                    not any(part.startswith(".") for part in p.relative_to(folder).parts):
                zf.write(p, p.relative_to(folder).as_posix())
                n += 1
    return n


class FaceSocialClient:
    def __init__(self, url: str, *, api_key: str | None = None, token: str | None = None,
                 refresh_token: str | None = None, timeout: float = 120.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.refresh_token = refresh_token
        self._http = httpx.Client(base_url=self.url + API, timeout=timeout, transport=transport)

    # ----------------------------------------------------------- plumbing
    @classmethod
    def login(cls, url: str, username: str, password: str, **kw: Any) -> FaceSocialClient:
        client = cls(url, **kw)
        body = client._call("POST", "/auth/login", json={"username": username,
                                                         "password": password}, auth=False)
        client.token, client.refresh_token = body["access_token"], body.get("refresh_token")
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FaceSocialClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def _refresh(self) -> bool:
        if not self.refresh_token or self.api_key:
            return False
        r = self._http.post("/auth/refresh", json={"refresh_token": self.refresh_token})
        if r.status_code != 200:
            return False
        body = r.json()
        self.token, self.refresh_token = body["access_token"], body.get("refresh_token")
        return True

    def _send(self, method: str, path: str, auth: bool = True, **kw: Any) -> httpx.Response:
        r = self._http.request(method, path, headers=self.headers() if auth else None, **kw)
        if r.status_code == 401 and auth and self._refresh():
            r = self._http.request(method, path, headers=self.headers(), **kw)
        if r.status_code >= 400:
            raise _error(r)
        return r

    def _call(self, method: str, path: str, auth: bool = True, **kw: Any) -> Any:
        return self._send(method, path, auth, **kw).json()

    # -------------------------------------------------------------- face
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/system/health", auth=False)  # type: ignore[no-any-return]

    def analyze(self, image: ImageLike, tasks: str | Iterable[str] | None = None,
                **options: Any) -> dict[str, Any]:
        data = {k: str(v) for k, v in options.items() if v is not None}
        if tasks is not None:
            data["tasks"] = tasks if isinstance(tasks, str) else ",".join(tasks)
        return self._call("POST", "/face/analyze",  # type: ignore[no-any-return]
                          files={"image": ("image", _image_bytes(image))}, data=data)

    def detect(self, image: ImageLike) -> dict[str, Any]:
        return self._call("POST", "/face/detect",  # type: ignore[no-any-return]
                          files={"image": ("image", _image_bytes(image))})

    def verify(self, a: ImageLike, b: ImageLike | None = None, *,
               identity_id: str | None = None) -> dict[str, Any]:
        files = {"image": ("a", _image_bytes(a))}
        if b is not None:
            files["image_b"] = ("b", _image_bytes(b))
        data = {"identity_id": identity_id} if identity_id else None
        return self._call("POST", "/face/verify", files=files,  # type: ignore[no-any-return]
                          data=data)

    def recognize(self, image: ImageLike, top_k: int | None = None) -> dict[str, Any]:
        data = {"top_k": str(top_k)} if top_k else None
        return self._call("POST", "/face/recognize",  # type: ignore[no-any-return]
                          files={"image": ("image", _image_bytes(image))}, data=data)

    # ----------------------------------------------------------- gallery
    def create_identity(self, name: str, metadata: dict[str, Any] | None = None,
                        ) -> dict[str, Any]:
        return self._call("POST", "/gallery/identities",  # type: ignore[no-any-return]
                          json={"name": name, "metadata": metadata or {}})

    def enrol(self, identity_id: str, *images: ImageLike,
              waive_liveness: bool = False) -> dict[str, Any]:
        files = [("image" if i == 0 else f"image{i}", (f"{i}", _image_bytes(im)))
                 for i, im in enumerate(images)]
        return self._call("POST", f"/gallery/identities/{identity_id}/faces",  # type: ignore[no-any-return]
                          files=files, data={"waive_liveness": str(waive_liveness).lower()})

    def identities(self, name: str | None = None, limit: int = 200) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if name:
            params["name"] = name
        return self._call("GET", "/gallery/identities",  # type: ignore[no-any-return]
                          params=params)

    # -------------------------------------------------------------- jobs
    def _submit(self, path: str, fields: dict[str, Any], paths: Iterable[str | Path] = (),
                archive: str | Path | None = None, file_field: str = "images",
                ) -> dict[str, Any]:
        data = {k: (v if isinstance(v, str) else json.dumps(v) if isinstance(v, list)
                    else str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in fields.items() if v is not None}
        with ExitStack() as stack:
            files: list[tuple[str, tuple[str, BinaryIO]]] = []
            for p in paths:
                files.append((file_field, (Path(p).name, stack.enter_context(open(p, "rb")))))
            if archive is not None:
                files.append(("archive", (Path(archive).name,
                                          stack.enter_context(open(archive, "rb")))))
            return self._call("POST", path, files=files, data=data)  # type: ignore[no-any-return]

    def batch_submit(self, paths: Iterable[str | Path] = (), *, archive: str | Path | None = None,
                     tasks: str | Iterable[str] = "detect,embed", **options: Any,
                     ) -> dict[str, Any]:
        """A batch job over image files and/or a zip; returns its status (202)."""
        t = tasks if isinstance(tasks, str) else ",".join(tasks)
        return self._submit("/batch/submit", {"tasks": t, **options}, paths, archive)

    def gallery_import(self, paths: Iterable[str | Path] = (), *,
                       archive: str | Path | None = None, identity: str | None = None,
                       waive_liveness: bool = False) -> dict[str, Any]:
        """Enrol labelled images as one job (zip folders or ``identity`` name the people)."""
        return self._submit("/gallery/import", {"identity": identity,
                                                "waive_liveness": waive_liveness or None},
                            paths, archive)

    def video_deepfake(self, video: str | Path, fps: float | None = None) -> dict[str, Any]:
        return self._submit("/video/deepfake", {"fps": fps}, [video], file_field="video")

    def batch_status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batch/status/{job_id}")  # type: ignore[no-any-return]

    def batch_results(self, job_id: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._call("GET", f"/batch/result/{job_id}",  # type: ignore[no-any-return]
                          params={"offset": offset, "limit": limit})

    def batch_stream(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Every item's record, streamed as NDJSON."""
        with self._http.stream("GET", f"/batch/result/{job_id}", params={"format": "ndjson"},
                               headers=self.headers()) as r:
            if r.status_code >= 400:
                r.read()
                raise _error(r)
            for line in r.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def batch_cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/batch/cancel/{job_id}")  # type: ignore[no-any-return]

    def realtime(self, stream: str | None = None) -> RealtimeStream:
        """A ``/ws/realtime`` stream with this client's credentials."""
        return RealtimeStream.connect(self.url, token=None if self.api_key else self.token,
                                      api_key=self.api_key, stream=stream)

    def create_session_client(self, client_id: str, identity_id: str,
                              name: str | None = None) -> dict[str, Any]:
        """Admins: register a continuous-authentication client (its ``api_key`` is in the
        answer, once)."""
        return self._call("POST", "/sessions/clients",  # type: ignore[no-any-return]
                          json={"client_id": client_id, "identity_id": identity_id,
                                "name": name or client_id})

    def get_session_client(self, client_id: str) -> dict[str, Any]:
        return self._call("GET", f"/sessions/clients/{client_id}")  # type: ignore[no-any-return]

    def set_client_state(self, client_id: str, action: str,
                         reason: str | None = None) -> dict[str, Any]:
        """Admins: ``block``, ``pause`` or ``unblock`` a session client."""
        return self._call("POST", f"/sessions/clients/{client_id}/{action}",  # type: ignore[no-any-return]
                          json={"reason": reason})

    def session_decisions(self, client_id: str | None = None, limit: int = 500,
                          ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if client_id:
            params["client_id"] = client_id
        return self._call("GET", "/sessions/decisions",  # type: ignore[no-any-return]
                          params=params)

    def batch_jobs(self, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "/batch/jobs",  # type: ignore[no-any-return]
                          params={"offset": offset, "limit": limit})

    def wait(self, job_id: str, timeout: float = 3600.0, poll: float = 0.5,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job ends (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.batch_status(job_id)
            if on_progress is not None:
                on_progress(status)
            if status["state"] in ENDED:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['state']} after {timeout} s")
            time.sleep(poll)


class StreamClosed(Exception):
    """The server closed the WebSocket; ``code`` and ``reason`` say why (1008 credentials,
    4003 client blocked, 1013 system full, 4408 idle)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class _Stream:
    """A synchronous WebSocket with JSON helpers (``websockets.sync``)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ready: dict[str, Any] = {}  # realtime: the server's "ready" message
        self.session: dict[str, Any] = {}  # sessions: the "session" message
        self.queued: list[dict[str, Any]] = []  # sessions: "queued" messages while waiting
        self.last_error: dict[str, Any] | None = None

    @staticmethod
    def _open(url: str, params: dict[str, str], timeout: float) -> Any:
        from urllib.parse import urlencode

        from websockets.sync.client import connect

        sep = "&" if "?" in url else "?"
        manager = connect(url + (sep + urlencode(params) if params else ""),
                          open_timeout=timeout, max_size=None)
        return manager.__enter__()  # the connection, owned (and closed) by the stream

    def send_json(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    def recv(self, timeout: float | None = 60.0) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            raw = self.ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise StreamClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") \
                from None
        return json.loads(raw)  # type: ignore[no-any-return]

    def recv_until(self, types: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
        """The next message of one of ``types`` (others, e.g. errors, are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg.get("type") in types:
                return msg

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RealtimeStream(_Stream):
    """``/ws/realtime``: send frames, get analyses (``face_detection_stream``,
    ``face_recognition_stream``, ``antispoof_stream``; ``system_status_stream``)."""

    @classmethod
    def connect(cls, url: str, *, token: str | None = None, api_key: str | None = None,
                stream: str | None = None, timeout: float = 30.0) -> RealtimeStream:
        params = {k: v for k, v in (("token", token), ("api_key", api_key),
                                    ("stream", stream)) if v}
        conn = cls(cls._open(_ws_url(url) + "/ws/realtime", params, timeout))
        conn.ready = conn.recv()  # {"type": "ready", ...} (or StreamClosed on bad credentials)
        return conn

    def analyze(self, frame: bytes, stream: str = "face_detection_stream",
                request_id: str | int | None = None, **options: Any) -> dict[str, Any]:
        """Send one frame (base64 JSON) and wait for its result."""
        import base64

        rid = str(request_id) if request_id is not None else f"r{time.monotonic_ns()}"
        self.send_json({"type": stream, "data": base64.b64encode(frame).decode(),
                        "request_id": rid, "options": options})
        while True:
            msg = self.recv()
            if msg.get("request_id") == rid:
                return msg

    def status(self) -> dict[str, Any]:
        self.send_json({"type": "system_status_stream", "request_id": "status"})
        return self.recv_until(("system_status_stream_result",))


class SessionStream(_Stream):
    """``/ws/session``: a continuous-authentication client streaming frames."""

    @classmethod
    def connect(cls, url: str, client_id: str, api_key: str, timeout: float = 30.0,
                wait_s: float = 60.0) -> SessionStream:
        """Connect and wait for the session to start (it may queue when the server is
        full: StreamClosed 1013 ``system_full`` after the server's queue timeout)."""
        conn = cls(cls._open(_ws_url(url) + "/ws/session",
                             {"client_id": client_id, "api_key": api_key}, timeout))
        while True:
            msg = conn.recv(wait_s)
            if msg.get("type") == "session":
                conn.session = msg
                return conn
            if msg.get("type") == "queued":
                conn.queued.append(msg)
            elif msg.get("type") == "error":
                conn.last_error = msg

    def send_frame(self, frame: bytes, request_id: str | None = None,
                   timeout: float = 60.0) -> dict[str, Any]:
        """Send one frame and wait for its decision (or paused status)."""
        if request_id is None:
            self.send_bytes(frame)
            return self.recv_until(("decision", "status", "error"), timeout)
        import base64

        self.send_json({"type": "frame", "data": base64.b64encode(frame).decode(),
                        "request_id": request_id})
        while True:
            msg = self.recv(timeout)
            if msg.get("request_id") == request_id:
                return msg


def _ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return base if base.endswith(API) else base + API


def _error(r: httpx.Response) -> ApiError:
    try:
        err = r.json().get("error") or {}
    except (json.JSONDecodeError, AttributeError):
        err = {}
    return ApiError(r.status_code, err.get("code") or f"http_{r.status_code}",
                    err.get("message") or r.text[:200], err.get("details"))
