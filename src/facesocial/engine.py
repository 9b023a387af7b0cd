"""The analysis engine: one object that turns images into typed results.

The CLI, the HTTP service, batch workers and realtime sessions all call the
same :class:`Engine`. It resolves which model serves each task from the
catalog (a requested model, or the best installed one), loads models lazily
through one loader, and runs any subset of tasks in one pass over an image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from facesocial.errors import IncompatibleEmbeddings, ModelNotInstalled, NoFaceFound, UnknownTask
from facesocial.models.catalog import Catalog, ModelSpec
from facesocial.models.manager import ManagedModel, ModelManager
from facesocial.models.store import ModelStore
from facesocial.results import Analysis, Detections, Embedding, Face, Verification
from facesocial.runtime import ModelRef
from facesocial.settings import Settings
from facesocial.vision.detection import detect_faces
from facesocial.vision.image import DecodedImage, ImageLimits, decode_image, load_image
from facesocial.vision.landmarks import MAX_SIDE, refine_landmarks
from facesocial.vision.quality import assess_faces

log = logging.getLogger(__name__)

FACE_TASKS = ("detect", "embed", "antispoof", "demographics", "deepfake")
TASKS = (*FACE_TASKS, "objects")
DEFAULT_TASKS = ("detect", "embed")

# families whose adapters this engine knows, per task
_FAMILIES = {
    "face_detection": {"yunet", "scrfd", "yolov8_face", "dlib_hog"},
    "face_embedding": {"arcface", "dlib_resnet"},
    "deepfake_detection": {"meso4"},
}

ImageInput = DecodedImage | np.ndarray | bytes | str | Path


def parse_tasks(tasks: Iterable[str] | str | None) -> tuple[str, ...]:
    """Normalise a task list; 'all' means every task. Detection is always implied."""
    if tasks is None:
        return DEFAULT_TASKS
    if isinstance(tasks, str):
        tasks = [t for t in tasks.replace(" ", "").split(",") if t]
    out: list[str] = []
    for t in tasks:
        if t == "all":
            return TASKS
        if t not in TASKS:
            raise UnknownTask(f"unknown task '{t}'", task=t, known=list(TASKS))
        if t not in out:
            out.append(t)
    if "detect" not in out and any(t in FACE_TASKS for t in out):
        out.insert(0, "detect")
    return tuple(out)


class Engine:
    """Runs face analysis tasks with models from the catalog.

    Models load on first use and stay loaded; ``loader`` can be replaced (the
    model manager does) so that something else owns sessions and memory.
    """

    def __init__(self, settings: Settings, catalog: Catalog | None = None,
                 store: ModelStore | None = None,
                 manager: ModelManager | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or Catalog.load()
        self.store = store or ModelStore(settings, self.catalog)
        self.manager = manager or ModelManager(settings, self.catalog, self.store)
        self.limits = ImageLimits.from_settings(settings)
        self._lock = threading.RLock()
        self._adapters: dict[tuple[str, ...], Any] = {}

    def close(self) -> None:
        self.manager.close()

    # ------------------------------------------------------------ resolution
    def resolve(self, task: str, requested: str | None = None) -> ModelSpec:
        """The model that serves ``task``: the requested one, or the best installed."""
        if requested and requested != "auto":
            spec = self.catalog.get(requested)
            if spec.task != task:
                raise ModelNotInstalled(f"model '{requested}' does not do {task}",
                                        model=requested, task=task)
            if not self.store.state(spec).installed:
                raise ModelNotInstalled(
                    f"model '{requested}' is not installed; run `facesocial models pull "
                    f"{requested}`", model=requested)
            return spec
        families = _FAMILIES.get(task)
        for spec in self.catalog.by_task(task):
            if families is not None and spec.family not in families:
                continue
            if spec.id == "yolov8_face_lite_t":  # copyleft: selectable, never a default
                continue
            if self.store.state(spec).installed:
                return spec
        raise ModelNotInstalled(f"no model for {task} is installed; run `facesocial models pull`",
                                task=task)

    def installed(self, model_id: str) -> bool:
        return model_id in self.catalog and self.store.is_installed(model_id)

    def load(self, model_id: str) -> ManagedModel:
        """A handle to an ONNX model; the model manager loads, places and evicts it."""
        return self.manager.handle(model_id)

    def _adapter(self, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._adapters:
                self._adapters[key] = build()
            return self._adapters[key]

    def _ref(self, spec: ModelSpec) -> ModelRef:
        return ModelRef(spec.id, spec.version, "cpu")

    # -------------------------------------------------------------- adapters
    def detector(self, name: str | None = None) -> Any:
        from facesocial.vision import detection as det

        spec = self.resolve("face_detection", name or self.settings.detector)

        def build() -> Any:
            if spec.family == "yunet":
                return det.YuNetDetector(self.load(spec.id))
            if spec.family == "scrfd":
                return det.SCRFDDetector(self.load(spec.id))
            if spec.family == "yolov8_face":
                return det.YoloV8FaceDetector(self.load(spec.id))
            return det.DlibHogDetector(self.store.path("dlib_shape68"), spec.version)

        return self._adapter(("det", spec.id), build)

    def embedder(self, name: str | None = None) -> Any:
        from facesocial.vision.embedding import ArcFaceEmbedder, DlibResNetEmbedder

        spec = self.resolve("face_embedding", name or self.settings.embedder)

        def build() -> Any:
            if spec.family == "dlib_resnet":
                return DlibResNetEmbedder(self.store.path(spec.id),
                                          self.store.path("dlib_shape5"), self._ref(spec))
            return ArcFaceEmbedder(self.load(spec.id), flip_tta=self.settings.embed_flip)

        return self._adapter(("emb", spec.id), build)

    def _refines_landmarks(self) -> bool:
        return self.settings.embed_refine_landmarks and self.installed("scrfd_2.5g")

    def pipeline_suffix(self, embedder_id: str) -> str:
        """What the recognition pipeline adds to an embedding model's version (ArcFace
        family only): '.lm' for refined landmarks, '.flip' for flip TTA."""
        if self.catalog.get(embedder_id).family != "arcface":
            return ""
        return ((".lm" if self._refines_landmarks() else "")
                + (".flip" if self.settings.embed_flip else ""))

    def antispoofer(self) -> Any:
        from facesocial.vision.liveness import AntiSpoofer

        have_b = self.installed("antispoof_binary")
        have_pr = self.installed("antispoof_print_replay")
        if not (have_b or have_pr):
            raise ModelNotInstalled("no anti-spoofing model is installed", task="anti_spoofing")
        # the live decision is the binary model's when present (see vision/liveness.py)
        decider = self.catalog.get("antispoof_binary" if have_b else "antispoof_print_replay")
        threshold = decider.thresholds.default if decider.thresholds else 0.5
        return self._adapter(("spoof",), lambda: AntiSpoofer(
            self.load("antispoof_binary") if have_b else None,
            self.load("antispoof_print_replay") if have_pr else None, threshold=threshold))

    def demographics(self, name: str | None = None) -> Any:
        """Cydral age + gender (pip-carried, default) or InsightFace genderage when asked."""
        choice = name or self.settings.demographics_model
        if choice == "genderage":
            from facesocial.vision.genderage import GenderAgeEstimator

            self.resolve("demographics", "genderage")  # installed, or a clear error
            return self._adapter(("demo", "genderage"),
                                 lambda: GenderAgeEstimator(self.load("genderage")))
        from facesocial.vision.demographics import DemographicsEstimator

        return self._adapter(("demo",), lambda: DemographicsEstimator(
            self.load("dlib_age"), self.load("dlib_gender"), self.store.path("dlib_shape5")))

    def deepfake(self, name: str | None = None) -> Any:
        from facesocial.vision.deepfake import Meso4Detector

        spec = self.resolve("deepfake_detection", name or self.settings.deepfake_model)
        return self._adapter(("fake", spec.id), lambda: Meso4Detector(self.load(spec.id)))

    def objects(self) -> Any:
        from facesocial.vision.objects import ObjectDetector

        spec = self.resolve("object_detection")
        return self._adapter(("obj", spec.id), lambda: ObjectDetector(self.load(spec.id)))

    # ----------------------------------------------------------------- tasks
    def image(self, image: ImageInput) -> np.ndarray:
        """Decode any accepted input into an RGB uint8 array (with limits)."""
        if isinstance(image, DecodedImage):
            return image.rgb
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError("array images must be (h, w, 3) uint8 RGB")
            return image
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), self.limits).rgb
        return load_image(image, self.limits).rgb

    def detect(self, image: ImageInput, detector: str | None = None,
               **overrides: Any) -> Detections:
        from facesocial.vision.detection import detect_faces

        rgb = self.image(image)
        s = self.settings
        opts = dict(score_threshold=s.det_score_threshold, nms_iou=s.det_nms_iou,
                    max_side=s.det_max_side, tile_size=s.det_tile_size,
                    min_face_size=s.min_face_size, max_faces=s.max_faces,
                    tile_min_face=s.det_tile_min_face, tiling=s.det_tiling)
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return detect_faces(self.detector(detector), rgb, **opts)

    def analyze(self, image: ImageInput, tasks: Iterable[str] | str | None = None, *,
                detector: str | None = None, embedder: str | None = None,
                **det_overrides: Any) -> Analysis:
        """Run ``tasks`` on one image; each face carries its own results."""
        task_list = parse_tasks(tasks)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        rgb = self.image(image)
        timings["decode"] = (time.perf_counter() - t0) * 1000
        h, w = rgb.shape[:2]
        dets: Detections | None = None
        per_face: dict[str, list[Any]] = {}
        if "detect" in task_list:
            t = time.perf_counter()
            dets = self.detect(rgb, detector, **det_overrides)
            timings["detect"] = (time.perf_counter() - t) * 1000
            if len(dets):
                t = time.perf_counter()
                per_face["quality"] = assess_faces(rgb, dets.boxes, dets.landmarks)
                timings["quality"] = (time.perf_counter() - t) * 1000
                spoof = self.antispoofer
                for task, run in (("embed",
                                   lambda: self.embed_detections(rgb, dets, embedder)),
                                  ("antispoof", lambda: spoof().predict(rgb, dets.boxes)),
                                  ("demographics",
                                   lambda: self.demographics().predict(rgb, dets.boxes)),
                                  ("deepfake", lambda: self.deepfake().score_faces(rgb, dets))):
                    if task in task_list:
                        t = time.perf_counter()
                        per_face[task] = list(run())
                        timings[task] = (time.perf_counter() - t) * 1000
        objects = None
        if "objects" in task_list:
            t = time.perf_counter()
            objects = self.objects().detect(rgb, self.settings.object_score_threshold)
            timings["objects"] = (time.perf_counter() - t) * 1000
        faces: list[Face] = []
        if dets is not None:
            none: list[Any] = [None] * len(dets)  # a task not run: no result for any face
            for i in range(len(dets)):
                faces.append(Face(
                    index=i, box=tuple(float(v) for v in dets.boxes[i]),  # type: ignore[arg-type]
                    score=float(dets.scores[i]), landmarks=dets.landmarks[i],
                    detector=dets.model,
                    embedding=per_face.get("embed", none)[i],
                    liveness=per_face.get("antispoof", none)[i],
                    demographics=per_face.get("demographics", none)[i],
                    deepfake=per_face.get("deepfake", none)[i],
                    quality=per_face.get("quality", none)[i],
                ))
        timings["total"] = (time.perf_counter() - t0) * 1000
        return Analysis(width=w, height=h, faces=tuple(faces), tasks=task_list,
                        detection=dets.info if dets is not None else None, objects=objects,
                        timings_ms=timings)

    def embed_detections(self, rgb: np.ndarray, dets: Detections,
                         embedder: str | None = None) -> list[Embedding]:
        """Embeddings of the detected faces, by the recognition pipeline (landmark
        refinement and flip TTA as configured; both named in the version)."""
        emb = self.embedder(embedder)
        ref, landmarks = emb.model, dets.landmarks
        suffix = self.pipeline_suffix(ref.id)
        if ".lm" in suffix:
            scrfd = self.detector("scrfd_2.5g")
            landmarks = refine_landmarks(rgb, dets, lambda crop: detect_faces(
                scrfd, crop, score_threshold=0.1, max_side=MAX_SIDE, tiling=False))
        ref = ModelRef(ref.id, ref.version + suffix, ref.device)
        vecs = emb.embed(rgb, landmarks, dets.boxes)
        return [Embedding(vector=v, model=ref, flipped_tta=".flip" in suffix) for v in vecs]

    def embed_largest(self, image: ImageInput, embedder: str | None = None,
                      detector: str | None = None) -> Embedding:
        """Embedding of the largest face in the image (what 1:1 verification compares)."""
        rgb = self.image(image)
        dets = self.detect(rgb, detector)
        floor = self.settings.embed_fallback_score
        if len(dets) == 0 and 0 < floor < self.settings.det_score_threshold:
            # one face is expected here: a weaker detection beats "no face" (measured on CFP:
            # recovers 9 of 11 photos, mostly profiles, with no pair made worse)
            dets = self.detect(rgb, detector, score_threshold=floor)
        if len(dets) == 0:
            raise NoFaceFound("no face found in the image")
        areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
        one = dets.select(np.array([int(np.argmax(areas))]))
        return self.embed_detections(rgb, one, embedder)[0]

    def deepfake_video(self, source: bytes | Path, model: str | None = None,
                       sample_fps: float | None = None) -> Any:
        """Per-frame deepfake scores and one verdict for a video (PyAV sampling)."""
        from facesocial.vision.deepfake import analyze_video

        s = self.settings

        class _Finder:
            def detect(_self, rgb: np.ndarray) -> Detections:  # noqa: N805
                return self.detect(rgb)

        return analyze_video(source, _Finder(), self.deepfake(model),
                             sample_fps=sample_fps or s.video_sample_fps,
                             max_frames=s.video_max_frames, max_bytes=s.video_max_bytes,
                             max_pixels=s.max_image_pixels)

    # ----------------------------------------------------------- verification
    def compare(self, a: Embedding, b: Embedding,
                threshold: str | float = "default") -> Verification:
        """1:1 decision between two embeddings of the same model and version."""
        if (a.model.id, a.model.version) != (b.model.id, b.model.version):
            raise IncompatibleEmbeddings(
                "embeddings from different models cannot be compared",
                a=a.model.to_dict(), b=b.model.to_dict())
        spec = self.catalog.get(a.model.id)
        score = float(np.dot(a.vector, b.vector))
        thr_value, thr_name = self.threshold(spec, threshold)
        return Verification(score=score, threshold=thr_value, match=score >= thr_value,
                            model=a.model, false_match_rate=estimate_fmr(spec, score),
                            threshold_name=thr_name)

    def threshold(self, spec: ModelSpec, which: str | float = "default") -> tuple[float, str]:
        if isinstance(which, (int, float)):
            return float(which), "custom"
        if spec.thresholds is None:
            raise ModelNotInstalled(f"model '{spec.id}' has no calibrated threshold",
                                    model=spec.id)
        if which == "strict" and spec.thresholds.strict is not None:
            return float(spec.thresholds.strict), "strict"
        return float(spec.thresholds.default), "default"

    def verify(self, a: ImageInput, b: ImageInput, embedder: str | None = None,
               threshold: str | float = "default") -> Verification:
        ea = self.embed_largest(a, embedder)
        eb = self.embed_largest(b, embedder)
        return self.compare(ea, eb, threshold)


def estimate_fmr(spec: ModelSpec, score: float) -> float | None:
    """False-match rate of the calibration impostors at or above ``score``."""
    if spec.thresholds is None or not spec.thresholds.fmr_curve:
        return None
    xs = np.array([p[0] for p in spec.thresholds.fmr_curve])
    ys = np.array([p[1] for p in spec.thresholds.fmr_curve])
    return float(np.interp(score, xs, ys, left=float(ys[0]), right=float(ys[-1])))
