"""InsightFace ``genderage`` adapter: pure pre/post functions and the wiring.

The real genderage.onnx is a remote model that is not installed here, so this
file proves only the WIRING: crop geometry, input layout and normalisation,
batching, output decoding and result construction. The class is run on a tiny
ONNX graph built in the test with the same input and output names and shapes
(``data`` [N, 3, 96, 96] -> ``fc1`` [N, 3]) that computes a fixed linear map of
the per-channel input mean. Nothing here says anything about the real model's
accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput, ModelLoadFailed
from facesocial.models.catalog import Catalog
from facesocial.runtime import LoadedModel, SessionFactory
from facesocial.settings import Settings
from facesocial.vision.genderage import (
    AGE_HALF_WIDTH,
    GenderAgeEstimator,
    crop_faces,
    crop_matrices,
    decode_genderage,
    preprocess_genderage,
)

# fc1 = mean_rgb @ W + B: female logit = R / 50, male logit = G / 50,
# age / 100 = B / 255 + 0.05 (so age = B / 2.55 + 5 years)
W = np.array([[1 / 50, 0, 0], [0, 1 / 50, 0], [0, 0, 1 / 255]], np.float32)
B = np.array([0.0, 0.0, 0.05], np.float32)


def _fake_genderage(path: Path, batch: int | str = "N", out_dim: int = 3) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    k = min(3, out_dim)
    w = np.zeros((3, out_dim), np.float32)
    w[:, :k] = W[:, :k]
    b = np.zeros(out_dim, np.float32)
    b[:k] = B[:k]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["data"], ["mean"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["mean", "W"], ["mw"]),
         helper.make_node("Add", ["mw", "B"], ["fc1"])],
        "genderage_wiring_stub",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, out_dim])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _load(path: Path, tmp_path: Path) -> LoadedModel:
    settings = Settings(model_dir=tmp_path, model_mirror=None, intra_op_threads=1)
    return SessionFactory(settings).create(Catalog.load().get("genderage"), path, device="cpu")


@pytest.fixture
def stub(tmp_path: Path) -> LoadedModel:
    return _load(_fake_genderage(tmp_path / "genderage.onnx"), tmp_path)


def _expected(rgb_mean: np.ndarray) -> tuple[str, float, float]:
    """What the stub must answer for a crop with this per-channel mean."""
    out = rgb_mean.astype(np.float64) @ W.astype(np.float64) + B
    p_female = 1 / (1 + np.exp(out[1] - out[0]))
    gender = "female" if p_female >= 0.5 else "male"
    return gender, float(max(p_female, 1 - p_female)), float(out[2] * 100)


# two uniform halves, one face box well inside each (the 1.5x crop stays inside too)
LEFT, RIGHT = (200, 20, 51), (20, 200, 153)
BOXES = np.array([[60, 60, 140, 140], [260, 60, 340, 140]], np.float32)


@pytest.fixture
def halves() -> np.ndarray:
    rgb = np.zeros((200, 400, 3), np.uint8)
    rgb[:, :200] = LEFT
    rgb[:, 200:] = RIGHT
    return rgb


# --- pure functions -------------------------------------------------------------------
def test_crop_matrices_follow_insightface_transform() -> None:
    m = crop_matrices(np.array([[10, 20, 110, 220]]))[0]
    s = 96 / (1.5 * 200)  # longer side 200
    np.testing.assert_allclose(m[:, :2], [[s, 0], [0, s]])
    np.testing.assert_allclose(m @ [60, 120, 1], [48, 48])  # box centre -> crop centre
    top_left, bottom_right = m @ [10, 20, 1], m @ [110, 220, 1]
    assert bottom_right[1] - top_left[1] == pytest.approx(64)  # longer side = 96 / 1.5


def test_crop_faces_puts_the_box_in_the_middle_third() -> None:
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[100:200, 100:200] = 255  # a white square that is exactly the box
    crop = crop_faces(rgb, np.array([[100, 100, 200, 200]]))[0]
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    assert crop[18:78, 18:78].min() == 255  # the box maps to 16..80
    assert crop[:14].max() == 0 and crop[82:].max() == 0
    assert crop[:, :14].max() == 0 and crop[:, 82:].max() == 0
    white = np.full((300, 300, 3), 255, np.uint8)
    corner = crop_faces(white, np.array([[0, 0, 40, 40]]))[0]  # image starts at crop px 16
    assert corner[:15].max() == 0 and corner[:, :15].max() == 0  # zero border outside
    assert corner[17:, 17:].min() == 255
    assert crop_faces(rgb, np.zeros((0, 4))).shape == (0, 96, 96, 3)


def test_preprocess_keeps_rgb_order_and_raw_scale() -> None:
    crops = np.zeros((2, 96, 96, 3), np.uint8)
    crops[0, ..., 0] = 255  # red
    crops[1, ..., 2] = 10  # blue
    x = preprocess_genderage(crops)
    assert x.shape == (2, 3, 96, 96) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    assert x[0, 0].min() == 255 and x[0, 1:].max() == 0
    assert x[1, 2].min() == 10
    np.testing.assert_allclose(preprocess_genderage(crops, 127.5, 128.0)[0, 0, 0, 0],
                               (255 - 127.5) / 128)


def test_decode() -> None:
    idx, conf, age = decode_genderage(np.array([[2.0, 1.0, 0.3], [0.0, 3.0, 0.551],
                                                [1.0, 1.0, -0.2]]))
    assert idx.tolist() == [0, 1, 0]  # female, male, tie -> female (argmax)
    np.testing.assert_allclose(conf, [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(-3)), 0.5])
    np.testing.assert_allclose(age, [30.0, 55.1, 0.0])  # age / 100, clipped at 0
    with pytest.raises(ValueError):
        decode_genderage(np.zeros((1, 2)))


# --- wiring through ONNX Runtime (stub graph, not the real model) --------------------------
def test_predict_wiring(stub: LoadedModel, halves: np.ndarray) -> None:
    est = GenderAgeEstimator(stub)
    assert est.size == 96 and (est.mean, est.std) == (0.0, 1.0)
    res = est.predict(halves, BOXES)
    assert len(res) == 2
    for r, colour in zip(res, (LEFT, RIGHT), strict=True):
        gender, conf, age = _expected(np.array(colour, np.float64))
        assert r.gender == gender
        assert r.gender_confidence == pytest.approx(conf, rel=1e-5)
        assert r.age == pytest.approx(age, abs=1e-3)
        assert r.age_range == pytest.approx((age - AGE_HALF_WIDTH, age + AGE_HALF_WIDTH))
        assert r.models == (stub.ref,) and r.models[0].id == "genderage"
    assert [r.gender for r in res] == ["female", "male"]
    assert res[0].age == pytest.approx(25.0, abs=1e-3)  # 51 / 2.55 + 5
    # box order is result order
    rev = est.predict(halves, BOXES[::-1])
    assert [r.gender for r in rev] == ["male", "female"]
    assert est.predict(halves, np.zeros((0, 4))) == []
    assert res[0].to_dict()["gender"] == "female"


def test_padding_at_the_border_reaches_the_graph(stub: LoadedModel, halves: np.ndarray) -> None:
    box = np.array([[0, 0, 60, 60]], np.float32)  # the 90 px crop starts 15 px outside
    r = GenderAgeEstimator(stub).predict(halves, box)[0]
    mean = crop_faces(halves, box).reshape(-1, 3).mean(axis=0)
    assert mean[0] == pytest.approx(LEFT[0] * (75 / 90) ** 2, rel=0.03)  # zeros pulled it down
    _, _, age = _expected(mean)
    assert r.age == pytest.approx(age, abs=1e-3)


def test_fixed_batch_graph_runs_face_by_face(tmp_path: Path, halves: np.ndarray,
                                             stub: LoadedModel) -> None:
    one = _load(_fake_genderage(tmp_path / "fixed.onnx", batch=1), tmp_path)
    assert one.session.get_inputs()[0].shape[0] == 1
    a = GenderAgeEstimator(one).predict(halves, BOXES)
    b = GenderAgeEstimator(stub).predict(halves, BOXES)
    assert [(x.gender, round(x.age, 4)) for x in a] == [(x.gender, round(x.age, 4)) for x in b]


def test_age_range_is_clipped_at_zero(stub: LoadedModel) -> None:
    rgb = np.zeros((100, 100, 3), np.uint8)  # mean 0 -> age 5 (the bias)
    r = GenderAgeEstimator(stub).predict(rgb, [[30, 30, 70, 70]])[0]
    assert r.age == pytest.approx(5.0, abs=1e-4)
    assert r.age_range == pytest.approx((0.0, 10.0), abs=1e-4)


def test_rejects_bad_inputs_and_graphs(stub: LoadedModel, tmp_path: Path) -> None:
    est = GenderAgeEstimator(stub)
    with pytest.raises(InvalidImage):
        est.predict(np.zeros((10, 10), np.uint8), [[0, 0, 5, 5]])
    with pytest.raises(InvalidInput):
        est.predict(np.zeros((10, 10, 3), np.uint8), [[5, 5, 0, 0]])
    wrong = _load(_fake_genderage(tmp_path / "five.onnx", out_dim=5), tmp_path)
    with pytest.raises(ModelLoadFailed):
        GenderAgeEstimator(wrong)
