"""Anti-spoofing: the crop on synthetic arrays, verdicts on the labelled photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput
from facesocial.runtime import LoadedModel, SessionFactory
from facesocial.vision.image import load_image
from facesocial.vision.liveness import (
    AntiSpoofer,
    combine_live,
    preprocess_antispoof,
    square_crop,
)
from tests.vision.conftest import Boxes


@pytest.fixture(scope="module")
def spoofer(load_model) -> AntiSpoofer:
    return AntiSpoofer(load_model("antispoof_binary"), load_model("antispoof_print_replay"))


@pytest.fixture(scope="module")
def photos(labels: dict, testdata: Path, face_boxes: Boxes) -> dict[str, tuple]:
    """liveness photo -> (rgb, largest face box (1, 4), label entry)."""
    out = {}
    for name, entry in labels["liveness"].items():
        rgb = load_image(testdata / name).rgb
        boxes = face_boxes(rgb)
        assert len(boxes) >= 1, name
        out[name] = (rgb, boxes[:1], entry)
    return out


# --- square_crop on synthetic arrays ------------------------------------------------
def _ramp(h: int, w: int) -> np.ndarray:
    """Distinct non-zero pixel values, so padding (0) is never confused with data."""
    v = (np.arange(h * w, dtype=np.int64) % 250 + 1).reshape(h, w)
    return np.stack([v, v + 1, v + 2], axis=2).astype(np.uint8)


def test_square_crop_inside_is_an_exact_copy() -> None:
    rgb = _ramp(20, 30)
    crop = square_crop(rgb, (10, 5, 16, 11), scale=1.0, size=6)
    np.testing.assert_array_equal(crop, rgb[5:11, 10:16])


def test_square_crop_square_side_from_the_longer_box_side() -> None:
    rgb = _ramp(40, 40)
    # box 4 wide, 8 tall, centred (20, 20): 1.5 x 8 = 12 px square at 14..26
    crop = square_crop(rgb, (18, 16, 22, 24), scale=1.5, size=12)
    np.testing.assert_array_equal(crop, rgb[14:26, 14:26])


def test_square_crop_pads_with_zeros_top_left() -> None:
    rgb = _ramp(10, 10)
    crop = square_crop(rgb, (-2, -3, 2, 1), scale=1.0, size=4)  # side 4 at x -2, y -3
    expected = np.zeros((4, 4, 3), np.uint8)
    expected[3:, 2:] = rgb[0:1, 0:2]
    np.testing.assert_array_equal(crop, expected)


def test_square_crop_pads_with_zeros_bottom_right() -> None:
    rgb = _ramp(10, 12)
    crop = square_crop(rgb, (10, 7, 14, 11), scale=1.0, size=4)  # x 10..14, y 7..11
    expected = np.zeros((4, 4, 3), np.uint8)
    expected[:3, :2] = rgb[7:10, 10:12]
    np.testing.assert_array_equal(crop, expected)


def test_square_crop_outside_the_image_is_all_zero() -> None:
    crop = square_crop(_ramp(10, 10), (20, 20, 24, 24), scale=1.0, size=4)
    assert crop.shape == (4, 4, 3) and not crop.any()


def test_square_crop_resizes_to_size() -> None:
    rgb = np.full((300, 200, 3), 77, np.uint8)
    crop = square_crop(rgb, (50, 50, 150, 170), scale=1.5, size=128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    # the 180 px square spans x 10..190 (inside) and y 20..200 (inside): no padding
    assert (crop == 77).all()
    padded = square_crop(rgb, (0, 0, 100, 100), scale=1.5, size=128)
    assert padded[0, 0].sum() == 0 and (padded[-1, -1] == 77).all()


def test_square_crop_rejects_absurd_boxes() -> None:
    with pytest.raises(InvalidInput):
        square_crop(_ramp(10, 10), (0, 0, 1000, 1000))


def test_preprocess_and_combination() -> None:
    crops = np.stack([np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 255, np.uint8)])
    x = preprocess_antispoof(crops)
    assert x.shape == (2, 3, 128, 128) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0].max() == 0.0 and x[1].min() == 1.0
    pb, p3 = np.array([0.9, 0.04]), np.array([0.4, 0.25])
    np.testing.assert_allclose(combine_live(pb, p3, 0.5), np.sqrt(pb * p3))
    np.testing.assert_allclose(combine_live(pb, p3, 1.0), pb)
    np.testing.assert_allclose(combine_live(None, p3), p3)
    np.testing.assert_allclose(combine_live(pb, None), pb)


# --- the models on the labelled photos ----------------------------------------------
def test_live_print_replay_verdicts(spoofer: AntiSpoofer, photos: dict) -> None:
    for name, (rgb, box, entry) in photos.items():
        (res,) = spoofer.predict(rgb, box)
        assert res.is_live == entry["live"], (name, res)
        assert res.verdict == ("live" if entry["live"] else entry["attack"]), (name, res)
        assert res.classes is not None and res.binary_live is not None
        assert [m.id for m in res.models] == ["antispoof_binary", "antispoof_print_replay"]
        # both models agree clearly on these photos (measured: >= 0.999 / <= 0.01)
        p = res.classes["live"] if entry["live"] else res.classes[entry["attack"]]
        assert p > 0.95, (name, res.classes)
        assert (res.live_score > 0.95) if entry["live"] else (res.live_score < 0.05), name


def test_either_model_alone(load_model, photos: dict) -> None:
    binary = AntiSpoofer(load_model("antispoof_binary"), None)
    three = AntiSpoofer(None, load_model("antispoof_print_replay"))
    for name, (rgb, box, entry) in photos.items():
        (b,) = binary.predict(rgb, box)
        (t,) = three.predict(rgb, box)
        assert b.classes is None and b.verdict == ("live" if entry["live"] else "spoof"), name
        assert t.binary_live is None and t.live_score == pytest.approx(t.classes["live"])
        assert t.verdict == ("live" if entry["live"] else entry["attack"]), name


def test_batched_equals_one_by_one(spoofer: AntiSpoofer, testdata: Path,
                                   face_boxes: Boxes) -> None:
    rgb = load_image(testdata / "faces/group_obama_biden.jpg").rgb
    boxes = face_boxes(rgb)
    assert len(boxes) >= 3
    batched = spoofer.predict(rgb, boxes)
    single = [spoofer.predict(rgb, boxes[i:i + 1])[0] for i in range(len(boxes))]
    assert batched == single
    assert spoofer.predict(rgb, np.zeros((0, 4))) == []


def _free_batch_copy(src: Path, dst: Path) -> None:
    """The model with a free batch dimension (its graph reshapes to [1, -1])."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    m = onnx.load(str(src))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.INT64 and \
                numpy_helper.to_array(init).tolist() == [1, -1]:
            init.CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), init.name))
    del m.graph.value_info[:]
    onnx.save(m, str(dst))


class _CountingSession:
    def __init__(self, session) -> None:
        self.session, self.calls = session, 0

    def run(self, names, feed):
        self.calls += 1
        return self.session.run(names, feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_free_batch_models_run_all_faces_in_one_call(
        spoofer: AntiSpoofer, settings, catalog, store, tmp_path: Path, testdata: Path,
        face_boxes: Boxes) -> None:
    factory = SessionFactory(settings)
    models = []
    for mid in ("antispoof_binary", "antispoof_print_replay"):
        _free_batch_copy(store.path(mid), tmp_path / f"{mid}.onnx")
        m = factory.create(catalog.get(mid), tmp_path / f"{mid}.onnx")
        models.append(LoadedModel(m.spec, _CountingSession(m.session), m.path, m.device))
    batched = AntiSpoofer(*models)
    rgb = load_image(testdata / "faces/group_obama_biden.jpg").rgb
    boxes = face_boxes(rgb)
    got = batched.predict(rgb, boxes)
    assert [m.session.calls for m in models] == [1, 1]
    want = spoofer.predict(rgb, boxes)
    for a, b in zip(got, want, strict=True):
        assert a.verdict == b.verdict
        assert a.live_score == pytest.approx(b.live_score, abs=1e-5)


def test_caller_mistakes_are_typed(spoofer: AntiSpoofer, photos: dict) -> None:
    rgb = next(iter(photos.values()))[0]
    with pytest.raises(InvalidInput):
        spoofer.predict(rgb, np.array([[10, 10, 5, 50]]))  # x2 < x1
    with pytest.raises(InvalidInput):
        spoofer.predict(rgb, np.array([1, 2, 3, 4, 5]))
    with pytest.raises(InvalidImage):
        spoofer.predict(rgb.astype(np.float32), np.array([[0, 0, 10, 10]]))
    with pytest.raises(InvalidInput):
        AntiSpoofer(None, None)
    with pytest.raises(InvalidInput):
        AntiSpoofer(spoofer.binary, None, threshold=1.5)


class _FixedBatchSession:
    """A stand-in session with a fixed batch of 2 that returns each row's mean."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def get_inputs(self):
        return [type("Input", (), {"name": "input", "shape": [2, 3, 4, 4]})()]

    def run(self, names, feed):
        x = feed["input"]
        assert len(x) == 2
        self.batches.append(len(x))
        return [x.reshape(len(x), -1).mean(axis=1, keepdims=True)]


def test_run_batched_pads_the_last_fixed_size_chunk(catalog) -> None:
    from facesocial.vision.liveness import run_batched

    session = _FixedBatchSession()
    model = LoadedModel(catalog.get("antispoof_binary"), session, Path("x.onnx"), "cpu")
    x = np.arange(3, dtype=np.float32)[:, None, None, None] * np.ones((3, 3, 4, 4), np.float32)
    out = run_batched(model, x)
    assert session.batches == [2, 2]
    np.testing.assert_array_equal(out[:, 0], [0, 1, 2])
