"""Deepfake detection with MesoNet Meso4, on photos and on sampled video frames.

Meso4 (Afchar et al., WIFS 2018) looks at mesoscopic texture in a 256x256
face crop and outputs the probability that the face is real. The authors
trained it on aligned face crops, so the crop matters: :func:`face_crop` cuts
a square ``scale`` times the detected box's long side, centred on the
landmark centroid (:func:`crop_center`), and resamples it to 256x256 in pure
numpy. See ``DEFAULT_CROP_SCALE`` for how the crop was measured.

Video: :func:`analyze_video` decodes with PyAV, samples frames by
presentation time at ``sample_fps``, scores every face of every sampled frame
and reports per-frame and aggregated results as a :class:`VideoDeepfake`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facesocial.errors import InvalidVideo
from facesocial.results import Deepfake, Detections
from facesocial.runtime import LoadedModel, ModelRef

log = logging.getLogger(__name__)

MESO_SIZE = 256

#: Crop side as a multiple of the detected box's long side, measured on the
#: authors' own aligned 256 px crops (tests' deepfake images) with YuNet boxes:
#: the crop that reproduces each whole image is 1.05-1.30 box long sides
#: (geometric mean 1.14), centred on the 5-landmark centroid (within 2% of the
#: image centre; the box centre is up to 10% off). 1.15 also maximises the mean
#: IoU with the whole image (0.86) and minimises the mean absolute pixel
#: difference to the whole image resized (about 16 of 255; 25 box-centred).
DEFAULT_CROP_SCALE = 1.15
DEFAULT_THRESHOLD = 0.5
BATCH_SIZE = 16  # crops per session run: 5-7 ms per face on 2 CPU cores at any batch size


class FaceFinder(Protocol):
    """Anything with ``detect(rgb) -> Detections``.

    Not ``detection.FaceDetector`` (whose ``candidates`` feed ``detect_faces``):
    wrap that pair, e.g. ``lambda rgb: detect_faces(yunet, rgb)``, to get one.
    """

    def detect(self, rgb: np.ndarray) -> Detections: ...


# --- cropping and preprocessing ---------------------------------------------
def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map integer indices into [0, n) by mirror reflection without edge repeat.

    The same rule as ``np.pad(mode='reflect')``, which the authors' pipeline
    uses for crops that leave the frame; valid however far outside ``idx`` is.
    """
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _source_patch(rgb: np.ndarray, x0: int, y0: int, span: int) -> np.ndarray:
    """The span x span pixels from (x0, y0), mirrored in where they leave the image."""
    h, w = rgb.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + span <= w and y0 + span <= h:
        return rgb[y0:y0 + span, x0:x0 + span]  # a view: no copy for inside crops
    rows = _reflect_index(np.arange(y0, y0 + span), h)
    cols = _reflect_index(np.arange(x0, x0 + span), w)
    return rgb[rows[:, None], cols[None, :]]


def _box_reduce(patch: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks (float32): an anti-aliasing prefilter for large downscales.

    Strided sums rather than ``reshape(...).mean(axis=(1, 3))``: several times
    faster on a large face.
    """
    f = patch.astype(np.float32)
    if k == 1:
        return f
    rows = f[0::k]
    for i in range(1, k):
        rows = rows + f[i::k]
    out = rows[:, 0::k]
    for i in range(1, k):
        out = out + rows[:, i::k]
    return out * np.float32(1.0 / (k * k))


def _linear_taps(start: float, step: float, size: int, n: int) -> tuple[np.ndarray, ...]:
    """Two-tap linear interpolation indices and weights for ``size`` outputs.

    Output pixel j samples source coordinate ``start + (j + 0.5) * step - 0.5``
    (pixel centres, as OpenCV's INTER_LINEAR does); taps are clamped to [0, n).
    """
    pos = start + (np.arange(size, dtype=np.float64) + 0.5) * step - 0.5
    lo = np.floor(pos)
    frac = (pos - lo).astype(np.float32)
    i0 = np.clip(lo, 0, n - 1).astype(np.intp)
    i1 = np.clip(lo + 1, 0, n - 1).astype(np.intp)
    return i0, i1, frac


def _square_region(box: np.ndarray, scale: float,
                   center: np.ndarray | None) -> tuple[float, float, float]:
    """(x0, y0, side) of the square of side ``scale * long side`` of the box.

    Centred on ``center`` when given, else on the box centre.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or w <= 0 or h <= 0:
        raise ValueError(f"face box must be finite with positive size, got {box!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"crop scale must be positive, got {scale}")
    cx, cy = ((x1 + x2) / 2, (y1 + y2) / 2) if center is None else (float(v) for v in center)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"crop centre must be finite, got {center!r}")
    side = scale * max(w, h)
    return cx - side / 2, cy - side / 2, side


def face_crop(rgb: np.ndarray, box: np.ndarray, scale: float = DEFAULT_CROP_SCALE,
              size: int = MESO_SIZE, center: np.ndarray | None = None) -> np.ndarray:
    """Square crop around a face box, resampled to ``size`` x ``size`` uint8 RGB.

    The square's side is ``scale`` times the box's long side; it is centred on
    ``center`` (x, y) when given, else on the box centre. Parts outside the
    image are mirrored in (reflect padding, as the MesoNet authors' pipeline
    does). Resampling is bilinear with pixel-centre alignment (OpenCV's
    INTER_LINEAR to within rounding); when the square is at least twice
    ``size`` it is first block-averaged by the integer factor, so large faces
    are not aliased.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected an (h, w, 3) image, got shape {rgb.shape}")
    x0, y0, side = _square_region(np.asarray(box, dtype=np.float64), scale, center)
    step = side / size
    k = max(1, int(step))
    # integer source grid covering the square (+1 px for the last linear tap),
    # a whole number of k-blocks long
    gx0, gy0 = math.floor(x0), math.floor(y0)
    span = (math.ceil(side) + 2 + k - 1) // k * k
    reduced = _box_reduce(_source_patch(rgb, gx0, gy0, span), k)
    n = reduced.shape[0]
    xi0, xi1, fx = _linear_taps((x0 - gx0) / k, step / k, size, n)
    yi0, yi1, fy = _linear_taps((y0 - gy0) / k, step / k, size, n)
    top = reduced[yi0] * (1 - fy)[:, None, None] + reduced[yi1] * fy[:, None, None]
    out = top[:, xi0] * (1 - fx)[None, :, None] + top[:, xi1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def crop_center(box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray | None:
    """Centroid of the 5 landmarks when they are usable, else None (box centre).

    On the authors' aligned crops the landmark centroid sits within 2% of the
    crop centre, the box centre up to 10% off (see DEFAULT_CROP_SCALE).
    Landmarks are unusable when missing, not finite, or outside the box.
    """
    if landmarks is None or len(landmarks) == 0:
        return None
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(pts)):
        return None
    c = pts.mean(axis=0)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x1 <= c[0] <= x2 and y1 <= c[1] <= y2):
        return None
    return c


def preprocess_meso4(crops: np.ndarray) -> np.ndarray:
    """(n, 256, 256, 3) uint8 RGB -> (n, 3, 256, 256) float32 in [0, 1]."""
    x = np.asarray(crops)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != (MESO_SIZE, MESO_SIZE, 3):
        raise ValueError(f"expected (n, {MESO_SIZE}, {MESO_SIZE}, 3) RGB crops, got {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops, got {x.dtype}")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


# --- the classifier ----------------------------------------------------------
class Meso4Detector:
    """MesoNet Meso4 on face crops: real probability per face, fake below threshold."""

    def __init__(self, model: LoadedModel, threshold: float = DEFAULT_THRESHOLD,
                 crop_scale: float = DEFAULT_CROP_SCALE, batch_size: int = BATCH_SIZE) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.threshold = float(threshold)
        self.crop_scale = float(crop_scale)
        self.batch_size = batch_size

    @property
    def ref(self) -> ModelRef:
        return self.model.ref

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Real probability per crop: (n, 256, 256, 3) uint8 RGB -> (n,) float32."""
        x = preprocess_meso4(crops)
        out = [self.model.run(x[i:i + self.batch_size])[0].reshape(-1)
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def crops(self, rgb: np.ndarray, detections: Detections) -> np.ndarray:
        """One 256x256 crop per detected face, (n, 256, 256, 3) uint8."""
        out = np.empty((len(detections), MESO_SIZE, MESO_SIZE, 3), np.uint8)
        for i, (box, lms) in enumerate(zip(detections.boxes, detections.landmarks, strict=True)):
            out[i] = face_crop(rgb, box, self.crop_scale, MESO_SIZE, crop_center(box, lms))
        return out

    def result(self, real_probability: float) -> Deepfake:
        """The typed result for one face's real probability."""
        p = float(real_probability)
        return Deepfake(real_probability=p, fake_score=1.0 - p, is_fake=p < self.threshold,
                        threshold=self.threshold, model=self.ref)

    def score_faces(self, rgb: np.ndarray, detections: Detections) -> list[Deepfake]:
        """A :class:`Deepfake` per detected face, in detection order."""
        if len(detections) == 0:
            return []
        return [self.result(p) for p in self.predict(self.crops(rgb, detections))]


# --- video -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FrameDeepfake:
    """One sampled video frame."""

    index: int  # 0-based index among decoded frames
    time_s: float  # presentation time from the first frame
    faces: int
    fake_score: float | None  # the most fake face's 1 - real_probability; None: no face
    is_fake: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "time_s": round(self.time_s, 4), "faces": self.faces,
                "fake_score": None if self.fake_score is None else round(self.fake_score, 4),
                "is_fake": self.is_fake}


@dataclass(frozen=True, slots=True)
class VideoDeepfake:
    """Deepfake verdict for a video from its sampled frames.

    ``fake_score`` is the mean, over sampled frames with a face, of each
    frame's most fake face; the verdict is 'fake' when that mean exceeds
    ``1 - threshold`` (the per-face rule ``real_probability < threshold``
    applied to the mean), 'no_face' when no sampled frame had a face.
    """

    verdict: str  # "fake" | "real" | "no_face"
    fake_score: float | None
    flagged_fraction: float | None  # of frames with a face, the share flagged fake
    frames: tuple[FrameDeepfake, ...]
    threshold: float
    sample_fps: float  # rate actually sampled: min(requested, the video's frame rate)
    source_fps: float | None
    frames_decoded: int
    hit_max_frames: bool  # more samples were due after max_frames; the rest was not decoded
    models: tuple[ModelRef, ...]

    @property
    def frames_with_face(self) -> int:
        return sum(1 for f in self.frames if f.faces > 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "fake_score": None if self.fake_score is None else round(self.fake_score, 4),
            "flagged_fraction": None if self.flagged_fraction is None
            else round(self.flagged_fraction, 4),
            "threshold": self.threshold, "sample_fps": round(self.sample_fps, 4),
            "source_fps": None if self.source_fps is None else round(self.source_fps, 4),
            "frames_sampled": len(self.frames), "frames_with_face": self.frames_with_face,
            "frames_decoded": self.frames_decoded, "hit_max_frames": self.hit_max_frames,
            "frames": [f.to_dict() for f in self.frames],
            "models": [m.to_dict() for m in self.models],
        }


@dataclass(frozen=True, slots=True)
class _Sample:
    index: int
    time_s: float
    rgb: np.ndarray


@dataclass(slots=True)
class _DecodeStats:
    decoded: int = 0
    sampled: int = 0
    stopped_early: bool = False  # more frames were due after max_frames samples


_TIME_EPS = 1e-6  # s: float slack when comparing frame times with sampling instants
_AV_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, UnicodeDecodeError)


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, without PyAV's errno and '<none>' file name."""
    return str(getattr(exc, "strerror", None) or exc)


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, *_AV_ERRORS)


def _open_container(source: bytes | Path, max_bytes: int) -> Any:
    """Open ``source`` with PyAV after size checks; InvalidVideo when it cannot be."""
    import av

    if isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
        if size == 0:
            raise InvalidVideo("the video is empty (0 bytes)")
        if size > max_bytes:
            raise InvalidVideo(f"the video is {size} bytes; the limit is {max_bytes}",
                               bytes=size, limit=max_bytes)
        target: Any = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.exists():
            raise InvalidVideo(f"no such video file: {path}")
        if not path.is_file():
            raise InvalidVideo(f"{path} is not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise InvalidVideo(f"the video file {path} is empty (0 bytes)")
        if size > max_bytes:
            raise InvalidVideo(f"{path} is {size} bytes; the limit is {max_bytes}",
                               bytes=size, limit=max_bytes)
        target = str(path)
    try:
        return av.open(target, mode="r")
    except _av_errors() as exc:
        raise InvalidVideo("not a readable video (unknown format, damaged or truncated "
                           f"container): {_reason(exc)}") from None


def _video_stream(container: Any, max_pixels: int) -> Any:
    """The first video stream, checked; InvalidVideo when there is none usable."""
    fmt = getattr(container.format, "name", "") or ""
    if fmt.endswith("_pipe") or fmt == "image2":
        raise InvalidVideo(f"this is a still image ({fmt}), not a video", format=fmt)
    if not container.streams.video:
        raise InvalidVideo("the file has no video stream", format=fmt)
    stream = container.streams.video[0]
    w, h = stream.codec_context.width or 0, stream.codec_context.height or 0
    if w * h > max_pixels:
        raise InvalidVideo(f"video frames are {w}x{h}; the limit is {max_pixels} pixels",
                           width=w, height=h)
    stream.thread_type = "AUTO"
    return stream


def _stream_fps(stream: Any) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    return fps if math.isfinite(fps) and fps > 0 else None


def _upright_rgb(frame: Any) -> np.ndarray:
    """RGB array of a decoded frame, turned upright by its display matrix (phones)."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=quarter)) if quarter else rgb


def _frame_time(frame: Any, index: int, fps: float | None, step: float) -> float:
    """Presentation time in seconds; from the index when the frame has no timestamp."""
    if frame.time is not None:
        return float(frame.time)
    return index / fps if fps else index * step


def _sample_frames(container: Any, stream: Any, sample_fps: float, max_frames: int,
                   stats: _DecodeStats) -> Iterator[_Sample]:
    """Decode and yield, for every instant ``k / sample_fps`` s, the first frame at or after it.

    Sampling goes by presentation time (relative to the first frame), not by
    decode index, so variable frame rates, gaps and dropped frames are
    handled; instants that fall in a gap share the frame after the gap, which
    is taken once. Stops after ``max_frames`` samples. Decoding errors become
    :class:`InvalidVideo`; errors of the caller's loop body pass through.
    """
    fps = _stream_fps(stream)
    step = 1.0 / sample_fps
    t0: float | None = None
    next_t = 0.0
    try:
        for frame in container.decode(stream):
            index = stats.decoded
            stats.decoded += 1
            t = _frame_time(frame, index, fps, step)
            t0 = t if t0 is None else t0
            if t - t0 + _TIME_EPS < next_t:
                continue
            if stats.sampled >= max_frames:  # a sample beyond the cap exists: stop here
                stats.stopped_early = True
                return
            sample = _Sample(index, t - t0, _upright_rgb(frame))
            next_t = (math.floor((sample.time_s + _TIME_EPS) / step) + 1) * step
            stats.sampled += 1
            yield sample
    except _av_errors() as exc:
        raise InvalidVideo(f"the video could not be decoded after {stats.decoded} frames "
                           f"(corrupt or truncated): {_reason(exc)}",
                           frames_decoded=stats.decoded) from None


def _score_frame(sample: _Sample, detector: FaceFinder,
                 deepfake: Meso4Detector) -> tuple[FrameDeepfake, ModelRef]:
    dets = detector.detect(sample.rgb)
    scores = deepfake.score_faces(sample.rgb, dets)
    if not scores:
        return FrameDeepfake(sample.index, sample.time_s, 0, None, None), dets.model
    worst = max(scores, key=lambda s: s.fake_score)
    return FrameDeepfake(sample.index, sample.time_s, len(scores), worst.fake_score,
                         worst.is_fake), dets.model


def _aggregate(frames: list[FrameDeepfake], threshold: float
               ) -> tuple[str, float | None, float | None]:
    scored = [f for f in frames if f.fake_score is not None]
    if not scored:
        return "no_face", None, None
    mean = float(np.mean([f.fake_score for f in scored]))
    flagged = sum(1 for f in scored if f.is_fake) / len(scored)
    return ("fake" if mean > 1.0 - threshold else "real"), mean, flagged


def analyze_video(source: bytes | Path, detector: FaceFinder, deepfake: Meso4Detector, *,
                  sample_fps: float, max_frames: int, max_bytes: int,
                  max_pixels: int = 50_000_000) -> VideoDeepfake:
    """Sample a video at ``sample_fps`` and score the faces of each sampled frame.

    At most ``max_frames`` frames are sampled (decoding stops at the next
    sampling instant after them). Empty,
    oversized, truncated, corrupt or non-video input raises
    :class:`facesocial.errors.InvalidVideo`.
    """
    if not (math.isfinite(sample_fps) and sample_fps > 0):
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    frames: list[FrameDeepfake] = []
    refs: dict[str, ModelRef] = {}
    stats = _DecodeStats()
    container = _open_container(source, max_bytes)
    try:
        stream = _video_stream(container, max_pixels)
        fps = _stream_fps(stream)
        for sample in _sample_frames(container, stream, sample_fps, max_frames, stats):
            frame, det_ref = _score_frame(sample, detector, deepfake)
            frames.append(frame)
            refs.setdefault(det_ref.id, det_ref)
    finally:
        container.close()
    if not frames:
        raise InvalidVideo("the video has no decodable frames (empty or truncated)")
    refs.setdefault(deepfake.ref.id, deepfake.ref)
    verdict, score, flagged = _aggregate(frames, deepfake.threshold)
    used_fps = min(sample_fps, fps) if fps else sample_fps
    result = VideoDeepfake(verdict, score, flagged, tuple(frames), deepfake.threshold,
                           used_fps, fps, stats.decoded, stats.stopped_early,
                           tuple(refs.values()))
    log.info("video: %d frames decoded, %d sampled at %.2f fps, %d with a face, verdict %s",
             stats.decoded, len(frames), used_fps, result.frames_with_face, verdict)
    return result
