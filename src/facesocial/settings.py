"""All runtime settings in one place, read from ``FACESOCIAL_*`` environment variables.

A :class:`Settings` object is built once by an entry point (CLI, service) and
passed down; nothing deeper in the package reads the environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "facesocial"


DEFAULT_SECRET = "change-me-facesocial-dev-secret"


def _default_model_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facesocial" / "models"


class Settings(BaseSettings):
    """Settings for the engine, the model store and (later) the service."""

    model_config = SettingsConfigDict(env_prefix="FACESOCIAL_", extra="ignore")

    # --- model store ---------------------------------------------------------
    model_dir: Path = Field(default_factory=_default_model_dir)
    model_mirror: Path | None = None
    download_timeout_s: float = 60.0

    # --- ONNX Runtime --------------------------------------------------------
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="Execution providers in order of preference; unavailable ones are skipped.",
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 = ONNX Runtime's default")
    inter_op_threads: int = Field(default=1, ge=0)
    # measured: spinning on (ORT's default) doubled the time per image of detect + embed +
    # antispoof on 2 cores (197-228 vs 107-111 ms, bench/ort_spinning.py): every
    # model's idle pool spins while the next model runs
    intra_op_spinning: bool = Field(default=False, description="let idle ONNX Runtime "
                                    "intra-op threads busy-wait (ORT's default)")
    warmup: bool = True

    # --- model manager -------------------------------------------------------
    device: Literal["auto", "cpu", "cuda", "sim"] = Field(
        default="auto", description="'sim' = a simulated GPU of sim_gpu_budget_mb (tests, drills)")
    gpu_index: int = Field(default=0, ge=0)
    gpu_budget_mb: float | None = Field(default=None, gt=0,
                                        description="default: the card's free memory at start")
    sim_gpu_budget_mb: float = Field(default=6144, gt=0)
    zone_split_mb: tuple[float, float, float] = Field(
        default=(2048, 2560, 1536), description="critical / high / flexible on a 6 GB card; "
        "scaled to the budget")
    cpu_budget_mb: float = Field(default=8192, gt=0)
    load_timeout_s: float = Field(default=30.0, gt=0)
    model_concurrency: int = Field(default=2, ge=1, description="inferences at once per model")
    batching: bool = True
    batching_on_cpu: bool = Field(default=False, description="micro-batch models placed on "
                                  "CPU too; off by default: it measured slower on CPU")
    batch_max: int = Field(default=32, ge=1)
    batch_wait_ms: float = Field(default=2.0, ge=0)
    warm_critical: bool = True

    # --- input limits --------------------------------------------------------
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    min_image_side: int = Field(default=16, gt=0)

    # --- service -------------------------------------------------------------
    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(default=None, description="default: SQLite in data_dir; "
                                     "postgresql+psycopg://... for PostgreSQL + pgvector")
    redis_url: str | None = None
    redis_prefix: str = Field(default="facesocial", pattern=r"^[A-Za-z0-9:_-]{1,64}$",
                              description="namespace for every Redis key this service writes")
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = DEFAULT_SECRET
    access_token_ttl_s: int = Field(default=900, gt=0)
    refresh_token_ttl_s: int = Field(default=14 * 24 * 3600, gt=0)
    admin_username: str | None = None  # first admin created at start when no user exists
    admin_password: str | None = None
    cors_origins: list[str] = Field(default_factory=list)
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    rate_limit_per_minute: int = Field(default=600, gt=0, description="per principal and "
                                       "endpoint")
    rate_limit_face_per_minute: int = Field(default=120, gt=0)
    rate_limit_login_per_minute: int = Field(default=20, gt=0, description="per client address")
    result_cache_size: int = Field(default=512, ge=0, description="results kept in process "
                                   "(Redis, when configured, holds them instead); 0: no cache")
    result_cache_ttl_s: int = Field(default=600, ge=0, description="0: no cache")
    # exact search is one matrix product per query (78 ms at 1M 512-d faces on 2 quiet cores,
    # ~10x less at 100k); the HNSW graph costs minutes to build at start (720 s at 1M) and pays
    # from a few hundred thousand faces (bench/search.py, gallery/index.py)
    gallery_hnsw_min: int = Field(default=200_000, gt=0, description="in-process index "
                                  "switches from exact search to HNSW above this many faces "
                                  "per model")
    # pgvector (m 16) at 1M faces found at most 97.8% of same-identity faces (ef_search 1000,
    # its ceiling) where the in-process graph finds 99.98% at twice the rate (bench/search.py);
    # the in-process index costs RAM in every process (~3 GB at 1M) and a build at start
    gallery_backend: Literal["auto", "memory", "pgvector"] = Field(
        default="auto", description="gallery search: 'memory' (in-process index, kept in step "
        "with the database's change log), 'pgvector' (SQL HNSW, PostgreSQL only); auto: "
        "pgvector on PostgreSQL, memory on SQLite")
    gallery_hnsw_ef: int = Field(default=0, ge=0, le=65_536, description="HNSW search width "
                                 "(expansion_search); 0: grown with the gallery's size "
                                 "(gallery/index.expansion_for)")
    recognize_top_k: int = Field(default=5, ge=1, le=100)
    # enrolment floors from the CFP quality bands (vision/quality.py): faces >= 0.6 miss
    # 0-1.1% of frontal probes, faces below 15-35%
    enrol_min_face_px: int = Field(default=64, ge=8)
    enrol_min_quality: float = Field(default=0.6, ge=0.0, le=1.0)
    enrol_require_live: bool = True

    # --- jobs: batch analysis, video deepfake, gallery import ------------------
    batch_executor: Literal["embedded", "celery"] = Field(
        default="embedded", description="embedded: threads in the API process (no extra "
        "service); celery: workers started with `facesocial worker`, Redis as broker")
    broker_url: str | None = Field(default=None, description="Celery broker; default: "
                                   "redis_url")
    spool_dir: Path | None = Field(default=None, description="where job inputs wait; default "
                                   "data_dir/spool. Celery workers on other machines must "
                                   "see the same directory (a shared volume)")
    batch_workers: int = Field(default=1, ge=1, le=64, description="embedded executor threads")
    batch_max_items: int = Field(default=10_000, ge=1)
    batch_max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    batch_max_spool_bytes: int = Field(default=2 * 1024 * 1024 * 1024, gt=0,
                                       description="bytes a zip may expand to")
    batch_max_attempts: int = Field(default=4, ge=1, le=50, description="deliveries of one "
                                    "item (retries of transient errors, lost workers)")
    batch_retry_base_s: float = Field(default=2.0, ge=0.0, description="backoff: base * 2^n")
    batch_visibility_timeout_s: int = Field(default=600, ge=1, description="an unacknowledged "
                                            "item is handed to another worker after this")
    batch_restore_interval_s: int = Field(default=10, ge=1, description="how often workers "
                                          "look for items of workers that died")
    batch_input_retention_s: int = Field(default=0, ge=0, description="keep spooled inputs "
                                         "this long after the job ends")
    batch_job_retention_s: int = Field(default=7 * 24 * 3600, ge=60, description="keep job "
                                       "state and results this long after the job ends")
    batch_lease_s: float = Field(default=30.0, gt=0, description="an embedded job whose "
                                 "process stopped heartbeating this long is taken over")
    batch_stall_s: float = Field(default=600.0, gt=0, description="a Celery job with pending "
                                 "items and no progress this long has them published again")
    batch_sweep_interval_s: float = Field(default=15.0, gt=0)
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    worker_nice: int = Field(default=10, ge=0, le=19, description="CPU niceness of `facesocial "
                             "worker`, so API requests on the same machine come first")
    gallery_change_retention_s: int = Field(default=7 * 24 * 3600, ge=60)

    # --- realtime streams and continuous-authentication sessions ----------------
    ws_max_frame_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="one frame, "
                                    "decoded; larger ones get a payload_too_large message")
    ws_rate_per_s: float = Field(default=30.0, gt=0, description="messages per second per "
                                 "connection (bursts of the same size)")
    ws_idle_timeout_s: float = Field(default=60.0, gt=0)
    ws_auth_timeout_s: float = Field(default=10.0, gt=0, description="time to send the auth "
                                     "message when credentials are not in the URL")
    session_policy_file: Path | None = Field(default=None, description="default: the packaged "
                                             "sessions/default_policy.json")
    session_pipelines: int = Field(default=2, ge=1, le=64, description="M: parallel lanes "
                                   "for session frames")
    sessions_per_pipeline: int = Field(default=4, ge=1, le=1000, description="N")
    session_queue_timeout_s: float = Field(default=10.0, ge=0)
    session_one_per_client: bool = Field(default=True, description="a client's new session "
                                         "replaces its live one, in whichever API process it "
                                         "runs (closed with 4409 session_replaced)")
    session_state_check_s: float = Field(default=5.0, gt=0, description="how often a live "
                                         "session re-reads its client's state")
    evidence_dir: Path | None = Field(default=None, description="default data_dir/evidence")
    evidence_retention_s: int = Field(default=30 * 24 * 3600, ge=3600)

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'facesocial.db'}"

    @property
    def spool_path(self) -> Path:
        return Path(self.spool_dir) if self.spool_dir else Path(self.data_dir) / "spool"

    @property
    def evidence_path(self) -> Path:
        return Path(self.evidence_dir) if self.evidence_dir else Path(self.data_dir) / "evidence"

    @property
    def celery_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    # --- model choice --------------------------------------------------------
    detector: Literal["auto", "yunet", "scrfd_2.5g", "yolov8_face_lite_t", "dlib_hog"] = "auto"
    embedder: str = Field(default="auto", description="'auto' picks the most accurate installed")
    deepfake_model: str = "meso4_deepfake"
    # recognition pipeline (ACCURACY.md section 7): SCRFD landmarks on a 2x context crop and
    # flip test-time augmentation lift CFP frontal-profile accuracy 95.4 -> 97.9 %; each
    # changes the embedding, so the embedding's version tag names them
    embed_refine_landmarks: bool = True
    embed_flip: bool = True
    embed_fallback_score: float = Field(default=0.3, ge=0.0, le=1.0, description="1:1 "
                                        "verification retries detection at this score when "
                                        "no face is found (0 = off)")
    demographics_model: Literal["cydral", "genderage"] = "cydral"

    # --- detection -----------------------------------------------------------
    det_score_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    det_nms_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    det_max_side: int = Field(default=640, ge=64, description="long side of the full-image pass")
    det_tile_size: int = Field(default=640, ge=128)
    det_tiling: bool = Field(default=True, description="off: one pass at det_max_side only "
                             "(faster on large photos; faces smaller than the pass can see "
                             "are missed, and results say how small that is)")
    min_face_size: int = Field(default=0, ge=0, description="px; 0 = whatever the detector sees")
    det_tile_min_face: int = Field(
        default=40, ge=0, description="px; with min_face_size 0, large images are tiled only "
        "as far as faces of this size need (about what face_recognition's default finds); "
        "0 = tile to native resolution; results report the smallest face they can see")
    max_faces: int = Field(default=0, ge=0, description="0 = no cap; largest faces kept first")

    # --- other tasks ---------------------------------------------------------
    # YOLOX-nano scores the labelled phones 0.43 and 0.22 and no-phone photos < 0.001;
    # 0.15 keeps 1.5x margin below the weaker real phone (bench: tests/vision/test_objects.py)
    object_score_threshold: float = Field(default=0.15, ge=0.0, le=1.0)
    video_sample_fps: float = Field(default=2.0, gt=0.0)
    video_max_frames: int = Field(default=300, gt=0)
    video_max_bytes: int = Field(default=500 * 1024 * 1024, gt=0)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
