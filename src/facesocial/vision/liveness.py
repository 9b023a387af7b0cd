"""Passive face anti-spoofing with the two MiniFASNet models (``minifasnet`` family).

Both models take the same input: a square crop centred on the face box, side
1.5 x the longer box side, zero padding where the square leaves the image,
resized to 128 x 128, RGB, ``x / 255``, NCHW. ``antispoof_binary`` returns
logits for (live, spoof); ``antispoof_print_replay`` returns logits for (live,
print, replay). See :func:`combine_live` and :class:`AntiSpoofer` for how the
two become one verdict.

The models shipped in the catalog have a fixed batch dimension of 1 (their
graph reshapes to ``[1, -1]``), so :func:`run_batched` feeds them one face per
call; a re-exported graph with a free batch dimension gets every face in one
call. Results do not depend on the batching.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from facesocial.errors import InvalidInput
from facesocial.results import Liveness
from facesocial.runtime import LoadedModel, ModelRef
from facesocial.vision.boxes import as_boxes
from facesocial.vision.image import check_rgb

log = logging.getLogger(__name__)

CROP_SCALE = 1.5
CROP_SIZE = 128
THREE_CLASSES = ("live", "print", "replay")
DEFAULT_THRESHOLD = 0.5
# Weight of the binary model in the combined live score (see combine_live).
# Chosen on the NUAA dev set (6 people, 180 live + 180 print frames, largest
# YuNet face): every admixture of the 3-class live probability lowered the ROC
# AUC (w = 1: 0.998, 0.75: 0.997, 0.5: 0.995, 0: 0.961) and raised the best
# APCER at BPCER <= 1% (5.0% -> 7.8% -> 11.1% -> 23.3%): the two models fail
# on the same frames, so the weaker one only adds noise. The 3-class model
# still names the attack (print / replay) and decides alone when it is the
# only model loaded. NUAA holds no replay attacks: re-check w on a dev set
# that does.
BINARY_WEIGHT = 1.0
# A box whose crop would be this many times larger than the image is a caller
# mistake (and would allocate an absurd canvas).
_MAX_CROP_TO_IMAGE = 4.0


# --- pure helpers -------------------------------------------------------------
def square_crop(rgb: np.ndarray, box: np.ndarray | Sequence[float], scale: float = CROP_SCALE,
                size: int = CROP_SIZE) -> np.ndarray:
    """Square crop centred on an xyxy ``box``, zero-padded outside the image.

    The square's side is ``round(scale * max(w, h))`` pixels and its top-left
    corner ``round(centre - side / 2)``; pixels outside the image are 0. The
    crop is then resized to ``size x size`` (bilinear, as the models' authors
    do at inference). Returns an (size, size, 3) array of ``rgb``'s dtype.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(1, int(round(scale * max(x2 - x1, y2 - y1))))
    h, w = rgb.shape[:2]
    if side > _MAX_CROP_TO_IMAGE * max(h, w):
        raise InvalidInput(f"box {list(box)} is far larger than the {w}x{h} image")
    left = int(round((x1 + x2) / 2 - side / 2))
    top = int(round((y1 + y2) / 2 - side / 2))
    canvas = np.zeros((side, side) + rgb.shape[2:], dtype=rgb.dtype)
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    if side == size:
        return canvas
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_LINEAR)


def preprocess_antispoof(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(n, s, s, 3) uint8 RGB crops -> (n, 3, s, s) float32 in [0, 1], C-contiguous."""
    batch = np.stack(list(crops)) if not isinstance(crops, np.ndarray) else crops
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise InvalidInput(f"crops must have shape (n, s, s, 3), got {batch.shape}")
    x = batch.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def combine_live(binary_live: np.ndarray | None, three_live: np.ndarray | None,
                 binary_weight: float = BINARY_WEIGHT) -> np.ndarray:
    """One live score per face from whichever models ran.

    Both models: the weighted geometric mean
    ``p_binary_live ** w * p_3class_live ** (1 - w)`` with ``w = binary_weight``
    (``w = 0.5`` is the plain geometric mean; ``w = 1`` uses the binary model
    alone for the live decision and the 3-class model only to name the
    attack). One model: its own live probability.
    """
    if not 0.0 <= binary_weight <= 1.0:
        raise InvalidInput(f"binary_weight must be in [0, 1], got {binary_weight}")
    if binary_live is None and three_live is None:
        raise ValueError("combine_live needs at least one model's scores")
    if binary_live is None:
        return np.asarray(three_live, dtype=np.float64)
    if three_live is None:
        return np.asarray(binary_live, dtype=np.float64)
    pb = np.asarray(binary_live, np.float64)
    p3 = np.asarray(three_live, np.float64)
    return pb ** binary_weight * p3 ** (1.0 - binary_weight)


def _fixed_batch(model: LoadedModel) -> int | None:
    """The model's fixed batch size, or None when its batch dimension is free."""
    dim = model.session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def _input_side(model: LoadedModel) -> int:
    """The square input side a model declares (CROP_SIZE when it is symbolic)."""
    dim = model.session.get_inputs()[0].shape[-1]
    return dim if isinstance(dim, int) else CROP_SIZE


def run_batched(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """Run ``model`` on all rows of ``x``: in one call when the batch dimension is
    free, else in chunks of the model's fixed batch size. Returns the first output."""
    fixed = _fixed_batch(model)
    if fixed is None or fixed == len(x):
        return np.asarray(model.run(x)[0])
    short = -len(x) % fixed  # pad the last chunk with zero images, drop their rows
    padded = np.concatenate([x, np.zeros((short,) + x.shape[1:], x.dtype)]) if short else x
    out = [np.asarray(model.run(padded[i:i + fixed])[0]) for i in range(0, len(padded), fixed)]
    return np.concatenate(out)[:len(x)]


# --- the adapter ----------------------------------------------------------------
class AntiSpoofer:
    """Live / print / replay verdicts from one or both MiniFASNet models.

    ``threshold`` applies to the combined live score (:func:`combine_live`
    with ``binary_weight``): a face is live when the score is at least the
    threshold. A non-live face's verdict is the attack the 3-class model
    favours (``print`` or ``replay``), or ``spoof`` when only the binary model
    is loaded. The default threshold 0.5 is not calibrated: on the NUAA dev
    set it rejects 11% of live frames; 0.037 rejects 0.6% and accepts 5% of
    prints.

    The attack *type* is a hint, not a measurement: the 3-class model names
    the sample print and replay photos right, but calls 69% of the NUAA print
    frames "replay".
    """

    def __init__(self, binary: LoadedModel | None, print_replay: LoadedModel | None,
                 threshold: float = DEFAULT_THRESHOLD,
                 binary_weight: float = BINARY_WEIGHT) -> None:
        if binary is None and print_replay is None:
            raise InvalidInput("AntiSpoofer needs at least one anti-spoofing model")
        for name, value in (("threshold", threshold), ("binary_weight", binary_weight)):
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"liveness {name} must be in [0, 1], got {value}")
        self.binary = binary
        self.print_replay = print_replay
        self.threshold = float(threshold)
        self.binary_weight = float(binary_weight)
        loaded = [m for m in (binary, print_replay) if m is not None]
        self.models: tuple[ModelRef, ...] = tuple(m.ref for m in loaded)
        self.size = self._input_size()
        for m in loaded:
            if _fixed_batch(m) is not None:
                log.debug("%s has a fixed batch of %s: faces run in chunks of that size",
                          m.spec.id, _fixed_batch(m))

    def _input_size(self) -> int:
        sizes = {_input_side(m) for m in (self.binary, self.print_replay) if m is not None}
        if len(sizes) != 1:
            raise InvalidInput(f"anti-spoofing models disagree on the input size: {sizes}")
        return sizes.pop()

    def crops(self, rgb: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """The models' (n, size, size, 3) uint8 input crops for ``boxes``."""
        check_rgb(rgb)
        arr = as_boxes(boxes)
        if len(arr) == 0:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return np.stack([square_crop(rgb, b, CROP_SCALE, self.size) for b in arr])

    def probabilities(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Binary live probabilities (n,) and 3-class softmax (n, 3) for a prepared batch."""
        binary = None if self.binary is None else softmax(run_batched(self.binary, x))[:, 0]
        three = None if self.print_replay is None else softmax(run_batched(self.print_replay, x))
        return binary, three

    def predict(self, rgb: np.ndarray,
                boxes: np.ndarray | Sequence[Sequence[float]]) -> list[Liveness]:
        """One :class:`Liveness` per box, in box order."""
        crops = self.crops(rgb, boxes)
        if len(crops) == 0:
            return []
        binary, three = self.probabilities(preprocess_antispoof(crops))
        live = combine_live(binary, None if three is None else three[:, 0], self.binary_weight)
        return [self._verdict(i, float(live[i]), binary, three) for i in range(len(live))]

    def _verdict(self, i: int, live: float, binary: np.ndarray | None,
                 three: np.ndarray | None) -> Liveness:
        is_live = live >= self.threshold
        classes = None if three is None else {
            name: float(p) for name, p in zip(THREE_CLASSES, three[i], strict=True)}
        if is_live:
            verdict = "live"
        elif classes is None:
            verdict = "spoof"
        else:
            verdict = "print" if classes["print"] >= classes["replay"] else "replay"
        return Liveness(verdict=verdict, is_live=bool(is_live), live_score=live,
                        binary_live=None if binary is None else float(binary[i]),
                        classes=classes, threshold=self.threshold, models=self.models)
