"""A real server for the WebSocket tests, with a test policy and an enrolled identity."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesocial.client import FaceSocialClient
from tests.e2e.server import ADMIN, Server, start_server

# decisions settle after 2 of the last 3 frames; no face locks after 1 s; 3 sign-outs block
TEST_POLICY = {"version": "test-2026.1", "verify_threshold": "default", "live_threshold": None,
               "phone_min_score": 0.15, "no_face_grace_s": 1.0, "multiple_faces": "lock_screen",
               "smoothing": {"window": 3, "min_frames": 2},
               "block": {"sign_outs": 3, "window_s": 600},
               # every frame verified: the tests switch photos, tracking is tested apart
               "reverify_interval_s": 0.0}
OWNER_ENROL = ("faces/obama_1.jpg", "faces/obama_2.jpg")
OWNER_LIVE = ("faces/obama_3.jpg", "faces/obama_4.jpg", "faces/obama_240p.jpg",
              "faces/obama_partial_face.jpg", "faces/rgba_32bit.png")


@dataclass
class Env:
    server: Server
    admin: FaceSocialClient
    identity_id: str
    testdata: Path

    def frame(self, name: str) -> bytes:
        return (self.testdata / name).read_bytes()

    def new_client(self, prefix: str = "c") -> tuple[str, str]:
        client_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        created = self.admin.create_session_client(client_id, self.identity_id)
        return client_id, created["api_key"]


def blank_jpeg(w: int = 320, h: int = 240) -> bytes:
    """A frame with no face: a grey wall with a little noise."""
    rng = np.random.default_rng(0)
    img = (128 + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start_session_server(workdir: Path, model_home: Path, data_dir: Path | None = None,
                         **env: str) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "policy.json"
    policy.write_text(json.dumps(TEST_POLICY))
    base = {"FACESOCIAL_SESSION_POLICY_FILE": str(policy),
            "FACESOCIAL_WS_MAX_FRAME_BYTES": str(1_500_000),
            "FACESOCIAL_SESSION_STATE_CHECK_S": "1"}
    return start_server(workdir, model_home, data_dir=data_dir, **{**base, **env})


def enrol_owner(server: Server, testdata: Path) -> tuple[FaceSocialClient, str]:
    admin = FaceSocialClient.login(server.url, *ADMIN)
    ident = admin.create_identity("obama")
    admin.enrol(ident["id"], *[(testdata / n).read_bytes() for n in OWNER_ENROL])
    return admin, ident["id"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, model_home: Path,
        testdata: Path) -> Iterator[Env]:
    server = start_session_server(tmp_path_factory.mktemp("sessions"), model_home)
    try:
        admin, identity_id = enrol_owner(server, testdata)
        yield Env(server, admin, identity_id, testdata)
        admin.close()
    finally:
        server.stop()
