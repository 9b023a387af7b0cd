"""Per-face quality: size, sharpness, head pose, exposure, and one score.

Everything here is pure numpy (the aligned-crop samples are bilinear lookups
done in numpy, vectorised over faces) apart from the per-face 2x3 similarity
estimate shared with :mod:`facesocial.vision.alignment`.

Measurements (fields of :class:`FaceQuality`)
-------------------------------------------------
All image measurements are taken on the *face region* of the 112x112 ArcFace
crop that the embedder sees (``REGION``: x 24..88, y 36..104 of the crop, i.e.
eyes, nose and mouth; background and hair are left out), sampled bilinearly
from the original image. Samples that fall outside the image are ignored
(``coverage`` is the fraction inside).

- ``size_px``: the short side of the face box.
- ``sharpness``: ``r = var(Laplacian(g)) / var(g)`` on the grey region, i.e.
  the variance of the 4-neighbour Laplacian normalised by the crop's own
  contrast, so that darkening or brightening a photo does not change it (that
  is exposure's job). The Laplacian step is one crop pixel, or one image pixel
  when the crop upsamples a small face (so upsampling alone is not "blur").
  Reported on ``[0, 1]`` as ``log10(r / 0.002) / log10(1.0 / 0.002)``:
  0 at r <= 0.002 (a Gaussian blur of ~6 crop px: nothing recognisable left),
  1 at r >= 1.0 (the sharpest 30% of the CFP frontal photos; median 0.71).
- ``yaw_deg``, ``pitch_deg``, ``roll_deg`` from the five landmarks with a
  rigid weak-perspective face model (eye centres and mouth corners on a plane,
  the nose tip in front of it): after undoing roll (the angle of the
  image-left -> image-right eye line, positive = clockwise on screen), a yaw
  of theta moves the nose tip sideways by ``d sin(theta)`` while the eye and
  mouth widths shrink to ``w cos(theta)``, so
  ``tan(yaw) = (nose_x - midline_x) / mean_width * E_OVER_D`` where the
  midline is the mean x of the eyes and mouth corners, ``mean_width`` the mean
  of the eye and mouth widths and ``E_OVER_D = 2.22`` the width-to-nose-depth
  ratio of the common 3D reference face (eye centres +-150, nose tip 135 in
  front, mouth corners +-150, 125 in front). Positive yaw = the nose points to
  the image's right. Pitch likewise from where the nose tip sits between the
  eye line and the mouth line: ``tan(pitch) = (T0 - t) * H_OVER_D`` with
  ``t = (nose_y - eyes_y) / (mouth_y - eyes_y)``, ``H_OVER_D = 2.46`` (eye to
  mouth height over nose depth, same model) and ``T0 = 0.558``, the median t
  of the YuNet landmarks on the 1,483 CFP frontal photos (so frontal = 0 for
  the default detector; with SCRFD-2.5G the CFP frontals come out at -6 deg).
  Positive pitch = looking up. Five points cannot see a full profile: on CFP
  profiles (about 90 deg) YuNet's |yaw| comes out 30-80 deg (median 59, 5th
  percentile 40), on CFP frontals 0-18 deg (95th percentile 14).
- ``brightness``: mean grey level of the region on [0, 1]; ``highlights``: its
  95th percentile; ``clipped_dark`` / ``clipped_bright``: fractions of region
  pixels <= 10 or >= 245.

Score
-----
``score = size_factor * sharpness_factor * pose_factor * exposure_factor``
with ``pose_factor = yaw part * pitch part`` and ``exposure_factor = dark part
* bright part``. Each part is a piecewise-linear curve (``*_KNOTS``) that
estimates *the fraction of the genuine-pair margin above the default
verification threshold that a face keeps*, ``(s - 0.2473) / (s0 - 0.2473)``,
where ``s`` is the mean cosine similarity (``w600k_mbf_folded``) of such faces
to frontal photos of the same person and ``s0`` the same for unimpaired faces.
So the score reads as "the share of the usual match margin this face keeps".
The weights are the exponents of this log-additive model (``WEIGHTS``): all 1.
Fitting them on two CFP folds and testing on the third (grid 0..3 per part)
gave unstable weights (size 0 or 3: CFP has no small faces) and changed the
held-out ranking AUC by -0.002 to +0.015, so the calibrated model stands.
Knots come from the CFP dev set (150 people, 2,059 photos with a face: 1,483
frontal, 576 profile; largest YuNet face):

- size: synthetic, each person's second frontal photo shrunk (INTER_AREA) to
  a face of 12..80 px: keeps 0.0 at 12 px, 0.29 at 16, 0.53 at 20, 0.70 at 24,
  0.79 at 28, 0.86 at 32, 0.94 at 40, 0.97 at 48, 0.99 at 64 (these clean
  small faces stay sharp at their own resolution, so size carries the effect).
- sharpness: CFP photos grouped by r (frontals: r < 0.2 keep 0.80, 0.2-0.4
  keep 0.90, 0.4-0.6 keep 0.96, >= 0.6 keep 1.0), extended below r = 0.05,
  where CFP has no photos, with the shape of synthetic Gaussian blur of the
  frontals (r 0.025 keeps 0.86, 0.009: 0.65, 0.004: 0.38, 0.002: 0) scaled to
  meet the real curve (real blur costs more than clean Gaussian blur).
- yaw: CFP photos grouped by |yaw|: 0-10 deg keep 0.97-0.99, 15-20: 0.89,
  20-25: 0.85, 30-35: 0.42. Beyond 30 deg five landmarks no longer measure yaw
  (the hidden eye and mouth corner are guessed): on CFP profiles the estimate
  spreads over 30-80 deg and does not rank them (Spearman -0.03 with their
  similarity), so every |yaw| >= 30 is one class, "profile", at 0.40 (CFP
  profiles keep 0.33 on average; their other parts supply the rest).
- pitch: a prior, NOT calibrated (CFP frontals span only +-15 deg, where
  nothing is lost): 1 to 15 deg, 0.85 at 25, 0.5 at 40.
- dark: on the highlights (95th percentile grey), not on the mean, so that a
  well-exposed dark-skinned face is not called "dark": synthetic darkening of
  the frontals (p95 19 keeps 0.52, 29: 0.72, 38: 0.80, 57: 0.90, 96: 0.96)
  joined to CFP frontals (p95 100-130 keep 0.82, >= 130 keep 0.97-1.0).
- bright: CFP frontals grouped by clipped_bright (0.1-1% keep 0.90, 1-3%: 0.87,
  3-6%: 0.74, 6-10%: 0.63), then synthetic overexposure (53% clipped keeps
  0.67, 75%: 0.46, 84%: 0.28, 90%: 0.03), lowered to stay monotone.

On CFP the per-photo prediction holds: photos scored 0.2-0.3 / 0.3-0.4 /
0.4-0.6 / 0.6-0.8 / 0.8-0.9 / 0.9-1 keep 0.19 / 0.36 / 0.46 / 0.79 / 0.88 /
0.99 of the margin. ``QUALITY_BANDS`` gives verification accuracy on the CFP
protocol pairs by the lower score of the pair. A face whose region is mostly
outside the image (``coverage < 0.25``) scores 0 with reason "out_of_frame".

Reasons name every part below ``REASON_BELOW`` (0.85: it costs more than 15%
of the margin), worst first: "small" (below ~31 px), "blurry" (r below
~0.16), "turned" (|yaw| 22-30 deg) or "profile" (|yaw| >= 30 deg), "pitched"
(|pitch| above ~25 deg), "dark" (p95 below ~52 of 255), "overexposed" (more
than ~2.5% of the region clipped).

Enrolment
---------
``MIN_ENROL_QUALITY = 0.6``: on CFP, templates (any photo, probed with every
other photo of the person) scoring >= 0.6 miss frontal probes at 0-1.1% (the
rate of the best photos) while those below miss 15-35%; the cut accepts 99.7%
of the frontal photos and 0.3% of the profiles. CFP has almost no faces
between 0.45 and 0.7, so any cut in that gap does the same on CFP; 0.6 keeps
synthetic faces of 24 px and more, Gaussian blur up to ~2 crop px and
darkening to x0.15, each of which still verifies at FNMR <= 1.3%.
``MIN_ENROL_SIZE = 64`` px: CFP frontals under 70 px keep 0.89 of the margin
against 0.95-1.0 above, and an enrolment photo can always be taken closer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facesocial.errors import InvalidInput
from facesocial.vision.alignment import arcface_matrix
from facesocial.vision.boxes import as_boxes
from facesocial.vision.image import check_rgb

__all__ = ["FaceQuality", "assess_faces", "enrolment_problems", "head_pose",
           "crop_statistics", "MIN_ENROL_QUALITY", "MIN_ENROL_SIZE", "REASON_BELOW",
           "QUALITY_BANDS"]

CROP = 112
REGION = (24, 36, 88, 104)  # x0, y0, x1, y1 of the face region in the ArcFace crop
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as cv2's RGB2GRAY
DARK_LEVEL, BRIGHT_LEVEL = 10, 245  # grey levels counted as clipped
MIN_COVERAGE = 0.25
CHUNK = 16  # faces per vectorised block in crop_statistics

# --- head pose model (see the module docstring)
E_OVER_D = 2.22  # eye/mouth width over nose-tip depth
H_OVER_D = 2.46  # eye-to-mouth height over nose-tip depth
T0 = 0.558  # frontal (nose_y - eyes_y) / (mouth_y - eyes_y), YuNet on CFP frontals

# --- sharpness normalisation: r = var(Laplacian) / var(grey)
R_LO, R_HI = 0.002, 1.0

# --- parts: (measurement knots, kept-margin knots), linear interpolation, flat outside
SIZE_KNOTS = ((12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 40.0, 48.0, 64.0),
              (0.0, 0.29, 0.53, 0.70, 0.79, 0.86, 0.94, 0.97, 1.0))
# on log10(r)
SHARP_KNOTS = (tuple(float(np.log10(r)) for r in (0.002, 0.004, 0.01, 0.025, 0.1, 0.25, 0.5, 0.7)),
               (0.0, 0.30, 0.52, 0.69, 0.80, 0.90, 0.96, 1.0))
YAW_KNOTS = ((0.0, 10.0, 20.0, 25.0, 30.0, 90.0), (1.0, 0.97, 0.89, 0.80, 0.40, 0.40))
PITCH_KNOTS = ((0.0, 15.0, 25.0, 40.0, 90.0), (1.0, 1.0, 0.85, 0.5, 0.1))  # a prior
# on the 95th-percentile grey level (0..255)
DARK_KNOTS = ((10.0, 20.0, 30.0, 40.0, 60.0, 100.0, 130.0, 160.0),
              (0.0, 0.50, 0.70, 0.80, 0.88, 0.92, 0.97, 1.0))
# on the fraction of clipped-bright pixels
BRIGHT_KNOTS = ((0.0, 0.005, 0.02, 0.05, 0.1, 0.5, 0.75, 0.85, 0.95),
                (1.0, 0.93, 0.87, 0.75, 0.65, 0.55, 0.40, 0.25, 0.0))
WEIGHTS = {"size": 1.0, "sharpness": 1.0, "pose": 1.0, "exposure": 1.0}

REASON_BELOW = 0.85

#: Recommended minimum score for enrolment (module docstring, "Enrolment").
MIN_ENROL_QUALITY = 0.6
#: Recommended minimum face size (box short side, px) for enrolment.
MIN_ENROL_SIZE = 64

#: CFP protocol pairs (4,200: 2,100 frontal-frontal, 2,100 frontal-profile) grouped
#: by the lower score of the two faces: (low, high, pairs, accuracy at the default
#: threshold 0.2473 of w600k_mbf_folded). A pair with no face counts as "no match".
#: Same ordering on each of the three folds (0.79-0.82 / 0.91-0.94 / 0.993-0.997).
QUALITY_BANDS: tuple[tuple[float, float, int, float], ...] = (
    (0.0, 0.3, 295, 0.7966), (0.3, 0.6, 1821, 0.9242), (0.6, 1.0, 2084, 0.9957))


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """How usable one face is for recognition; see the module docstring."""

    size_px: float
    sharpness: float  # [0, 1], log-scaled Laplacian-to-contrast ratio
    yaw_deg: float  # + = nose towards the image's right
    pitch_deg: float  # + = looking up
    roll_deg: float  # + = clockwise on screen
    brightness: float  # mean grey of the face region, [0, 1]
    highlights: float  # 95th-percentile grey of the face region, [0, 1]
    clipped_dark: float  # fraction of region pixels <= 10
    clipped_bright: float  # fraction of region pixels >= 245
    coverage: float  # fraction of the face region inside the image
    size_factor: float
    sharpness_factor: float
    pose_factor: float
    exposure_factor: float
    score: float  # [0, 1]: product of the factors
    reasons: tuple[str, ...]  # what lowers the score, worst first (module docstring)

    def to_dict(self) -> dict[str, Any]:
        def r(x: float, nd: int = 3) -> float:
            return round(float(x), nd)

        return {
            "score": r(self.score), "reasons": list(self.reasons),
            "size_px": r(self.size_px, 1), "sharpness": r(self.sharpness),
            "yaw_deg": r(self.yaw_deg, 1), "pitch_deg": r(self.pitch_deg, 1),
            "roll_deg": r(self.roll_deg, 1),
            "exposure": {"brightness": r(self.brightness), "highlights": r(self.highlights),
                         "clipped_dark": r(self.clipped_dark),
                         "clipped_bright": r(self.clipped_bright)},
            "coverage": r(self.coverage),
            "factors": {"size": r(self.size_factor), "sharpness": r(self.sharpness_factor),
                        "pose": r(self.pose_factor), "exposure": r(self.exposure_factor)},
        }


# --------------------------------------------------------------------------- geometry
def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(n, 5, 2) landmarks -> (n, 3) yaw, pitch, roll in degrees (model in the docstring)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    re, le = lm[:, 0], lm[:, 1]
    d = le - re
    roll = np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    rel = lm - ((re + le) / 2)[:, None, :]
    x = c * rel[..., 0] + s * rel[..., 1]  # rotated by -roll: eye line horizontal
    y = -s * rel[..., 0] + c * rel[..., 1]
    midline = (x[:, 0] + x[:, 1] + x[:, 3] + x[:, 4]) / 4
    width = np.maximum((np.abs(x[:, 1] - x[:, 0]) + np.abs(x[:, 4] - x[:, 3])) / 2, 1e-6)
    yaw = np.arctan((x[:, 2] - midline) / width * E_OVER_D)
    eyes_y = (y[:, 0] + y[:, 1]) / 2
    height = np.maximum((y[:, 3] + y[:, 4]) / 2 - eyes_y, 1e-6)
    t = (y[:, 2] - eyes_y) / height
    pitch = np.arctan((T0 - t) * H_OVER_D)
    return np.degrees(np.stack([yaw, pitch, roll], axis=1))


def _crop_to_image(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face: (2, 3) map from crop pixels to image pixels, and crop px per image px."""
    ms = np.stack([arcface_matrix(p, CROP) for p in landmarks])  # image -> crop
    a = ms[:, :, :2]
    ainv = np.linalg.inv(a)
    t = -np.einsum("nij,nj->ni", ainv, ms[:, :, 2])
    scale = np.sqrt(np.abs(np.linalg.det(a)))
    return np.concatenate([ainv, t[:, :, None]], axis=2), scale


def _grey_at(rgb: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear grey samples of ``rgb`` at (sx, sy) (any shape) and an inside-image mask."""
    h, w = rgb.shape[:2]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    sx = np.clip(sx, 0, w - 1)
    sy = np.clip(sy, 0, h - 1)
    xa = np.minimum(sx.astype(np.intp), max(w - 2, 0))
    ya = np.minimum(sy.astype(np.intp), max(h - 2, 0))
    xb = np.minimum(xa + 1, w - 1)
    yb = np.minimum(ya + 1, h - 1)
    fx = (sx - xa).astype(np.float32)
    fy = (sy - ya).astype(np.float32)
    idx = np.stack([ya * w + xa, ya * w + xb, yb * w + xa, yb * w + xb])
    taps = np.take(rgb.reshape(-1, 3), idx, axis=0).astype(np.float32) @ LUMA  # (4, ...)
    top = taps[0] + (taps[1] - taps[0]) * fx
    bot = taps[2] + (taps[3] - taps[2]) * fx
    return top + (bot - top) * fy, inside


def crop_statistics(rgb: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Raw (n,) statistics of each face region: ratio r, mean, p95, clipped fractions, coverage.

    ``r`` is ``var(Laplacian) / var(grey)``; grey levels are 0..255. Faces are
    processed ``CHUNK`` at a time (about 30 MB of scratch per chunk).
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    keys = ("ratio", "mean", "p95", "clipped_dark", "clipped_bright", "coverage")
    if len(lm) == 0:
        return {k: np.zeros(0) for k in keys}
    parts = [_region_statistics(rgb, lm[i:i + CHUNK]) for i in range(0, len(lm), CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def _region_statistics(rgb: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    n = len(lm)
    x0, y0, x1, y1 = REGION
    uu, vv = np.meshgrid(np.arange(x0, x1, dtype=np.float64),
                         np.arange(y0, y1, dtype=np.float64))
    to_img, scale = _crop_to_image(lm)
    sx = to_img[:, 0, 0, None, None] * uu + to_img[:, 0, 1, None, None] * vv \
        + to_img[:, 0, 2, None, None]
    sy = to_img[:, 1, 0, None, None] * uu + to_img[:, 1, 1, None, None] * vv \
        + to_img[:, 1, 2, None, None]
    # Laplacian step: one crop pixel, or one image pixel where the crop upsamples
    step = np.maximum(1.0, scale)[:, None]
    du, dv = to_img[:, :, 0] * step, to_img[:, :, 1] * step  # (n, 2) image offsets
    zero = np.zeros_like(du)
    offsets = np.stack([zero, du, -du, dv, -dv], axis=1)[:, :, :, None, None]  # (n, 5, 2, 1, 1)
    gs, ins = _grey_at(rgb, sx[:, None] + offsets[:, :, 0], sy[:, None] + offsets[:, :, 1])
    g, inside = gs[:, 0], ins[:, 0]
    lap = gs[:, 1:].sum(axis=1) - 4.0 * g
    ok = ins.all(axis=1)

    count = inside.sum(axis=(1, 2))
    c = np.maximum(count, 1)
    mean = (g * inside).sum(axis=(1, 2)) / c
    var = (np.square(g - mean[:, None, None]) * inside).sum(axis=(1, 2)) / c
    lc = np.maximum(ok.sum(axis=(1, 2)), 1)
    lmean = (lap * ok).sum(axis=(1, 2)) / lc
    lvar = (np.square(lap - lmean[:, None, None]) * ok).sum(axis=(1, 2)) / lc
    # 95th percentile of the inside samples (linear interpolation, as np.percentile)
    flat = np.sort(np.where(inside, g, -1.0).reshape(n, -1), axis=1)
    first = flat.shape[1] - count  # outside samples sort first
    pos = first + 0.95 * np.maximum(count - 1, 0)
    lo = np.clip(np.floor(pos).astype(np.intp), 0, flat.shape[1] - 1)
    hi = np.minimum(lo + 1, flat.shape[1] - 1)
    rows = np.arange(n)
    p95 = flat[rows, lo] + (flat[rows, hi] - flat[rows, lo]) * (pos - np.floor(pos))
    p95 = np.where(count > 0, p95, 0.0)
    return {
        "ratio": np.where(var > 1e-6, lvar / np.maximum(var, 1e-6), 0.0),
        "mean": mean, "p95": p95,
        "clipped_dark": ((g <= DARK_LEVEL) & inside).sum(axis=(1, 2)) / c,
        "clipped_bright": ((g >= BRIGHT_LEVEL) & inside).sum(axis=(1, 2)) / c,
        "coverage": count / float(uu.size),
    }


# --------------------------------------------------------------------------- scoring
def _part(x: np.ndarray, knots: tuple[tuple[float, ...], tuple[float, ...]]) -> np.ndarray:
    return np.interp(x, knots[0], knots[1])


def _factors(size: np.ndarray, ratio: np.ndarray, pose: np.ndarray, p95: np.ndarray,
             bright: np.ndarray) -> dict[str, np.ndarray]:
    """Parts of the score (each (n,) in [0, 1]); the keys of the minor ones start with '_'."""
    yaw = _part(np.abs(pose[:, 0]), YAW_KNOTS)
    pitch = _part(np.abs(pose[:, 1]), PITCH_KNOTS)
    dark = _part(p95, DARK_KNOTS)
    over = _part(bright, BRIGHT_KNOTS)
    return {"size": _part(size, SIZE_KNOTS),
            "sharpness": _part(np.log10(np.maximum(ratio, 1e-9)), SHARP_KNOTS),
            "pose": yaw * pitch, "exposure": dark * over,
            "_yaw": yaw, "_pitch": pitch, "_dark": dark, "_bright": over}


_REASONS = (("small", "size"), ("blurry", "sharpness"), ("profile", "_yaw"),
            ("pitched", "_pitch"), ("dark", "_dark"), ("overexposed", "_bright"))
PROFILE_YAW = 30.0  # |yaw| from which the yaw reason is "profile" rather than "turned"


def assess_faces(rgb: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]],
                 landmarks: np.ndarray | Sequence[Any]) -> list[FaceQuality]:
    """Quality of every face, in box order; vectorised over faces."""
    check_rgb(rgb)
    b = as_boxes(boxes)
    lm = np.asarray(landmarks, np.float64)
    if lm.size == 0 and len(b) == 0:
        return []
    lm = lm.reshape(-1, 5, 2) if lm.size == len(b) * 10 else lm
    if lm.shape != (len(b), 5, 2):
        raise InvalidInput(f"landmarks must have shape ({len(b)}, 5, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise InvalidInput("landmarks must be finite numbers")
    size = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    st = crop_statistics(rgb, lm)
    pose = head_pose(lm)
    f = _factors(size, st["ratio"], pose, st["p95"], st["clipped_bright"])
    score = np.ones(len(b))
    for name, w in WEIGHTS.items():
        score = score * np.power(f[name], w)
    out_of_frame = st["coverage"] < MIN_COVERAGE
    score = np.where(out_of_frame, 0.0, np.clip(score, 0.0, 1.0))
    sharp = np.clip(np.log10(np.maximum(st["ratio"], 1e-9) / R_LO) / np.log10(R_HI / R_LO), 0, 1)
    faces = []
    for i in range(len(b)):
        if out_of_frame[i]:
            reasons: tuple[str, ...] = ("out_of_frame",)
        else:
            low = [(float(f[key][i]), name) for name, key in _REASONS
                   if f[key][i] < REASON_BELOW]
            if abs(pose[i, 0]) < PROFILE_YAW:
                low = [(v, "turned" if name == "profile" else name) for v, name in low]
            reasons = tuple(name for _, name in sorted(low, key=lambda t: t[0]))
        faces.append(FaceQuality(
            size_px=float(size[i]), sharpness=float(sharp[i]),
            yaw_deg=float(pose[i, 0]), pitch_deg=float(pose[i, 1]), roll_deg=float(pose[i, 2]),
            brightness=float(st["mean"][i] / 255.0), highlights=float(st["p95"][i] / 255.0),
            clipped_dark=float(st["clipped_dark"][i]),
            clipped_bright=float(st["clipped_bright"][i]), coverage=float(st["coverage"][i]),
            size_factor=float(f["size"][i]), sharpness_factor=float(f["sharpness"][i]),
            pose_factor=float(f["pose"][i]), exposure_factor=float(f["exposure"][i]),
            score=float(score[i]), reasons=reasons))
    return faces


def enrolment_problems(q: FaceQuality, min_quality: float = MIN_ENROL_QUALITY,
                       min_size: int = MIN_ENROL_SIZE) -> list[str]:
    """Why ``q`` should not be enrolled; an empty list means it may be.

    Codes: "small" (box short side below ``min_size``), "low_quality" (score
    below ``min_quality``) followed by the face's own reasons that explain the
    low score. Each code appears once.
    """
    if not 0.0 <= float(min_quality) <= 1.0:
        raise InvalidInput(f"min_quality must be in [0, 1], got {min_quality}")
    if min_size < 0:
        raise InvalidInput(f"min_size must be >= 0, got {min_size}")
    problems: list[str] = []
    if q.size_px < min_size:
        problems.append("small")
    if q.score < min_quality:
        problems.append("low_quality")
        problems.extend(r for r in q.reasons if r not in problems)
    return problems
