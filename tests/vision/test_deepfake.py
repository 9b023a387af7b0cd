"""Meso4 deepfake detection on the authors' test faces, and on videos made from them."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from facesocial.errors import InvalidVideo
from facesocial.results import Deepfake, Detections
from facesocial.vision.deepfake import (
    Meso4Detector,
    VideoDeepfake,
    analyze_video,
    crop_center,
    face_crop,
    preprocess_meso4,
)
from facesocial.vision.image import load_image

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

#: real probabilities of the whole images (catalog "reference")
CATALOG_REFERENCE = {"df00204": 0.048, "df01254": 0.025, "real00240": 0.990, "real00772": 0.997}


# --- fixtures ------------------------------------------------------------------------
class _Detector:
    """``.detect(rgb) -> Detections`` over the project's YuNet detector."""

    def __init__(self, detect: Callable[[np.ndarray], Detections]) -> None:
        self.detect = detect


@pytest.fixture(scope="module")
def detector(load_model) -> _Detector:
    from facesocial.vision import detection

    yunet = detection.YuNetDetector(load_model("yunet"))
    if hasattr(yunet, "detect"):
        return yunet
    return _Detector(lambda rgb: detection.detect_faces(yunet, rgb))


@pytest.fixture(scope="module")
def meso(load_model) -> Meso4Detector:
    return Meso4Detector(load_model("meso4_deepfake"))


@pytest.fixture(scope="module")
def faces(testdata: Path, labels: dict) -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (RGB image, is fake), the four MesoNet test crops."""
    out = {}
    for rel, entry in sorted(labels["deepfake"].items()):
        out[Path(rel).stem] = (load_image(testdata / rel).rgb, bool(entry["fake"]))
    assert sum(f for _, f in out.values()) == 2 and len(out) == 4
    return out


def _whole(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_LINEAR)


# --- cropping and preprocessing ------------------------------------------------------
def test_face_crop_of_whole_image_is_a_plain_resize(faces) -> None:
    for rgb, _ in faces.values():
        h, w = rgb.shape[:2]
        crop = face_crop(rgb, np.array([0, 0, w, h], np.float32), scale=1.0)
        assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
        diff = np.abs(crop.astype(int) - _whole(rgb))
        assert diff.max() <= 3 and diff.mean() < 0.2  # OpenCV rounds in fixed point


def test_face_crop_large_downscale_is_antialiased() -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    crop = face_crop(big, np.array([0, 0, 1024, 1024]), scale=1.0)
    area = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - area).max() <= 1


def test_face_crop_mirrors_outside_the_image() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :, 0] = np.arange(100, dtype=np.uint8)[None, :]  # red = x
    img[:, :, 1] = np.arange(100, dtype=np.uint8)[:, None]  # green = y
    # a 100 px square centred on (0, 50): columns x = -50..49 land on whole pixels
    crop = face_crop(img, np.array([-50, 25, 50, 75]), scale=1.0, size=100)
    assert np.array_equal(crop[0, :, 0], np.abs(np.arange(100) - 50))  # x < 0 mirrored
    assert np.array_equal(crop[:, 0, 1], np.arange(100))
    far = face_crop(img, np.array([500, 500, 520, 520]), scale=3.0)
    assert far.shape == (256, 256, 3)


@pytest.mark.parametrize("box", [[10, 10, 10, 50], [0, 0, np.nan, 5], [5, 5, 1, 1]])
def test_face_crop_rejects_bad_boxes(box) -> None:
    with pytest.raises(ValueError):
        face_crop(np.zeros((64, 64, 3), np.uint8), np.array(box, np.float32), 1.15)


def test_crop_center_falls_back_to_box_centre() -> None:
    box = np.array([0, 0, 10, 10], np.float32)
    lms = np.full((5, 2), 4.0, np.float32)
    assert np.allclose(crop_center(box, lms), [4, 4])
    assert crop_center(box, np.full((5, 2), np.nan)) is None
    assert crop_center(box, np.full((5, 2), 50.0)) is None


def test_preprocess_meso4() -> None:
    crops = np.full((2, 256, 256, 3), 255, np.uint8)
    crops[1, ..., 0] = 0
    x = preprocess_meso4(crops)
    assert x.shape == (2, 3, 256, 256) and x.dtype == np.float32
    assert x[0].min() == 1.0 and x[1, 0].max() == 0.0 and x[1, 1].min() == 1.0
    with pytest.raises(ValueError):
        preprocess_meso4(np.zeros((1, 128, 128, 3), np.uint8))
    with pytest.raises(ValueError):
        preprocess_meso4(np.zeros((1, 256, 256, 3), np.float32))


def test_default_crop_reproduces_the_aligned_test_crops(faces, detector) -> None:
    """On the authors' own aligned crops, the face crop should be close to the whole image."""
    centred, boxed = [], []
    for rgb, _ in faces.values():
        dets = detector.detect(rgb)
        assert len(dets) == 1
        box, lms = dets.boxes[0], dets.landmarks[0]
        whole = _whole(rgb).astype(np.float32)
        centred.append(np.abs(face_crop(rgb, box, center=crop_center(box, lms)) - whole).mean())
        boxed.append(np.abs(face_crop(rgb, box) - whole).mean())
    assert np.mean(centred) < 20 and np.mean(centred) < np.mean(boxed)


# --- classification ------------------------------------------------------------------
def test_predict_on_whole_crops_follows_labels(faces, meso) -> None:
    names = sorted(faces)
    probs = meso.predict(np.stack([_whole(faces[n][0]) for n in names]))
    assert probs.shape == (4,) and probs.dtype == np.float32
    for name, p in zip(names, probs, strict=True):
        assert (p < 0.5) == faces[name][1], name
        assert abs(p - CATALOG_REFERENCE[name]) < 0.002, name


def test_predict_is_batch_independent(faces, load_model) -> None:
    crops = np.stack([_whole(rgb) for rgb, _ in faces.values()])
    small = Meso4Detector(load_model("meso4_deepfake"), batch_size=3)
    batched = small.predict(crops)
    single = np.concatenate([small.predict(c[None]) for c in crops])
    assert np.allclose(batched, single, atol=1e-6)
    assert small.predict(np.zeros((0, 256, 256, 3), np.uint8)).shape == (0,)


def test_score_faces_flags_deepfakes(faces, detector, meso) -> None:
    for name, (rgb, fake) in faces.items():
        dets = detector.detect(rgb)
        (result,) = meso.score_faces(rgb, dets)
        assert isinstance(result, Deepfake)
        assert result.is_fake == fake, (name, result.real_probability)
        assert result.fake_score == pytest.approx(1 - result.real_probability)
        assert result.model.id == "meso4_deepfake" and result.threshold == 0.5
        assert result.to_dict()["model"]["id"] == "meso4_deepfake"
    assert meso.score_faces(rgb, Detections.empty(dets.model)) == []


def test_threshold_is_validated(load_model) -> None:
    with pytest.raises(ValueError):
        Meso4Detector(load_model("meso4_deepfake"), threshold=1.5)


# --- video ---------------------------------------------------------------------------
def _encode(frames: list[np.ndarray], target, fps: int = 10, fmt: str = "mp4",
            pts_ms: list[int] | None = None, options: dict | None = None) -> None:
    """Encode RGB frames with H.264; ``pts_ms`` gives explicit timestamps (VFR)."""
    with av.open(target, "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        stream.options = {"crf": "12"}
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _video_bytes(frames: list[np.ndarray], **kwargs) -> bytes:
    buf = io.BytesIO()
    _encode(frames, buf, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip(faces) -> tuple[bytes, list[bool]]:
    """4 s at 10 fps: fake, real, fake, real, 1 s each (each test crop resized to 256)."""
    order = ["df00204", "real00240", "df01254", "real00772"]
    frames = [_whole(faces[n][0]) for n in order for _ in range(10)]
    return _video_bytes(frames), [faces[n][1] for n in order]


def _analyze(source, detector, meso, **kw) -> VideoDeepfake:
    args = {"sample_fps": 2.0, "max_frames": 300, "max_bytes": 50_000_000} | kw
    return analyze_video(source, detector, meso, **args)


def test_video_scores_follow_labels(clip, detector, meso) -> None:
    data, fake_per_second = clip
    res = _analyze(data, detector, meso, sample_fps=2.0)
    assert [f.index for f in res.frames] == list(range(0, 40, 5))
    assert [f.time_s for f in res.frames] == pytest.approx([i * 0.5 for i in range(8)])
    for f in res.frames:
        assert f.faces == 1 and f.fake_score is not None
        assert f.is_fake == fake_per_second[int(f.time_s)], (f.time_s, f.fake_score)
    assert res.frames_decoded == 40 and not res.hit_max_frames
    assert res.sample_fps == 2.0 and res.source_fps == pytest.approx(10.0)
    assert res.flagged_fraction == pytest.approx(0.5)
    assert res.fake_score == pytest.approx(np.mean([f.fake_score for f in res.frames]))
    assert res.verdict == ("fake" if res.fake_score > 0.5 else "real")
    assert {m.id for m in res.models} == {"yunet", "meso4_deepfake"}
    d = res.to_dict()
    assert d["frames_sampled"] == 8 and d["frames_with_face"] == 8


def test_video_all_fake_and_path_input(faces, detector, meso, tmp_path: Path) -> None:
    path = tmp_path / "fake.mkv"
    _encode([_whole(faces["df01254"][0])] * 10, str(path), fmt="matroska")
    res = _analyze(path, detector, meso, sample_fps=5.0)
    assert len(res.frames) == 5 and res.verdict == "fake" and res.flagged_fraction == 1.0


def test_video_sampling_caps(clip, detector, meso) -> None:
    data, _ = clip
    capped = _analyze(data, detector, meso, sample_fps=4.0, max_frames=3)
    # instants 0, 0.25, 0.5 s: the first frame at or after each
    assert [f.time_s for f in capped.frames] == pytest.approx([0.0, 0.3, 0.5])
    assert [f.index for f in capped.frames] == [0, 3, 5]
    assert capped.hit_max_frames and capped.frames_decoded < 40
    every = _analyze(data, detector, meso, sample_fps=50.0, max_frames=12)
    assert [f.index for f in every.frames] == list(range(12)) and every.sample_fps == 10.0
    exact = _analyze(data, detector, meso, sample_fps=2.0, max_frames=8)
    assert len(exact.frames) == 8 and not exact.hit_max_frames and exact.frames_decoded == 40


def test_video_sampling_goes_by_timestamp(faces, detector, meso) -> None:
    """Variable frame rate: frames bunch up, then a gap; samples follow time, not index."""
    pts = [0, 100, 200, 300, 400, 500, 1500, 1600, 2500, 2550, 2600]
    frames = [_whole(faces["real00240"][0])] * len(pts)
    data = _video_bytes(frames, fmt="matroska", pts_ms=pts)
    res = _analyze(data, detector, meso, sample_fps=2.0)
    assert [f.index for f in res.frames] == [0, 5, 6, 8]
    assert [f.time_s for f in res.frames] == pytest.approx([0.0, 0.5, 1.5, 2.5])


def test_video_without_faces(detector, meso) -> None:
    grey = [np.full((256, 256, 3), 128, np.uint8)] * 10
    res = _analyze(_video_bytes(grey), detector, meso)
    assert res.verdict == "no_face" and res.fake_score is None and res.flagged_fraction is None
    assert all(f.faces == 0 and f.fake_score is None for f in res.frames)


def _bad_videos(clip, testdata: Path, tmp_path: Path) -> dict[str, bytes | Path]:
    data, _ = clip
    faststart = tmp_path / "faststart.mp4"
    grey = [np.full((256, 256, 3), 100, np.uint8)] * 20
    _encode(grey, str(faststart), options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    wav = io.BytesIO()
    with av.open(wav, "w", format="wav") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        out.mux(s.encode(f))
        out.mux(s.encode())
    return {
        "empty": b"",
        "garbage": np.random.default_rng(1).integers(0, 256, 20_000, np.uint8).tobytes(),
        "text": b"this is not a video\n" * 500,
        "truncated_moov_at_end": data[: len(data) // 2],
        "truncated_head": data[:64],
        "truncated_faststart": cut,
        "still_image": (testdata / "deepfake" / "df00204.jpg").read_bytes(),
        "audio_only": wav.getvalue(),
        "missing_file": tmp_path / "nope.mp4",
        "directory": tmp_path,
        "too_large": data + b"\0" * 100,
    }


def test_bad_videos_raise_invalid_video(clip, detector, meso, testdata: Path,
                                        tmp_path: Path) -> None:
    cases = _bad_videos(clip, testdata, tmp_path)
    for name, source in cases.items():
        limit = len(clip[0]) if name == "too_large" else 50_000_000
        with pytest.raises(InvalidVideo) as err:
            _analyze(source, detector, meso, max_bytes=limit)
        assert err.value.code == "invalid_video" and err.value.message, name


def test_detector_errors_are_not_disguised_as_bad_video(clip, meso) -> None:
    class Broken:
        def detect(self, rgb: np.ndarray) -> Detections:
            raise RuntimeError("detector bug")

    with pytest.raises(RuntimeError, match="detector bug"):
        _analyze(clip[0], Broken(), meso)
