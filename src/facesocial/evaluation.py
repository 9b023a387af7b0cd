"""Pure metric functions for verification, detection and anti-spoofing.

Used by the calibration script, ``facesocial eval`` and the accuracy report.
Terms follow ISO/IEC 19795-1 (FMR, FNMR) and ISO/IEC 30107-3 (APCER, BPCER).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (probability a genuine pair outscores an impostor)."""
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    pos, neg = scores[same], scores[~same]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    # average ranks of ties
    allv = np.concatenate([pos, neg])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """Smallest threshold whose false-match rate (impostor score >= t) is <= fmr."""
    s = np.sort(np.asarray(impostor, np.float64))[::-1]
    k = int(np.floor(fmr * len(s)))  # impostors allowed at or above the threshold
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def fmr_at(impostor: np.ndarray, threshold: float) -> float:
    impostor = np.asarray(impostor)
    return float((impostor >= threshold).mean()) if len(impostor) else float("nan")


def fnmr_at(genuine: np.ndarray, threshold: float) -> float:
    genuine = np.asarray(genuine)
    return float((genuine < threshold).mean()) if len(genuine) else float("nan")


def fmr_curve(impostor: np.ndarray, n: int = 48, floor: float = 1e-7) -> list[tuple[float, float]]:
    """(score, FMR at that threshold) points, ascending in score, for interpolation."""
    impostor = np.sort(np.asarray(impostor, np.float64))
    lo = max(floor, 1.0 / max(len(impostor), 1))
    rates = np.unique(np.concatenate([np.geomspace(lo, 1.0, n), [0.5, 0.1, 0.01]]))
    pts = {round(threshold_at_fmr(impostor, r), 5): r for r in rates}
    curve = sorted((t, float(fmr_at(impostor, t))) for t in pts)
    # monotone non-increasing FMR with score
    out: list[tuple[float, float]] = []
    for t, r in curve:
        if out and r > out[-1][1]:
            r = out[-1][1]
        out.append((t, r))
    return out


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy on (scores, same)."""
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    cand = np.unique(scores)
    cand = np.concatenate([cand, [cand[-1] + 1e-6]]) if len(cand) else np.array([0.0])
    acc = [(((scores >= t) == same).mean(), -abs(t)) for t in cand]
    return float(cand[int(np.argmax([a for a, _ in acc]))])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Accuracy with each fold's threshold chosen on the other folds: (mean, std)."""
    scores, same, folds = np.asarray(scores), np.asarray(same, bool), np.asarray(folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t = best_threshold(scores[~test], same[~test]) if (~test).any() else 0.0
        accs.append(((scores[test] >= t) == same[test]).mean())
    return float(np.mean(accs)), float(np.std(accs))


@dataclass(frozen=True, slots=True)
class PadRates:
    """Presentation-attack detection error rates at one threshold."""

    apcer: float  # attacks accepted as live
    bpcer: float  # live presentations rejected
    threshold: float
    attacks: int
    bona_fide: int


def pad_rates(live_scores: np.ndarray, is_live: np.ndarray, threshold: float) -> PadRates:
    live_scores = np.asarray(live_scores, np.float64)
    is_live = np.asarray(is_live, bool)
    attacks, bona = live_scores[~is_live], live_scores[is_live]
    return PadRates(
        apcer=float((attacks >= threshold).mean()) if len(attacks) else float("nan"),
        bpcer=float((bona < threshold).mean()) if len(bona) else float("nan"),
        threshold=float(threshold), attacks=int(len(attacks)), bona_fide=int(len(bona)))


def threshold_at_bpcer(live_scores: np.ndarray, is_live: np.ndarray, bpcer: float) -> float:
    """Highest threshold that rejects at most ``bpcer`` of live presentations."""
    bona = np.sort(np.asarray(live_scores, np.float64)[np.asarray(is_live, bool)])
    k = int(np.floor(bpcer * len(bona)))
    return float(bona[min(k, len(bona) - 1)]) if len(bona) else 0.5


def match_detections(truth: np.ndarray, detected: np.ndarray, scores: np.ndarray,
                     iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of detected boxes to annotated (true) boxes.

    Boxes are ``(n, 4)`` xyxy. Detections are taken in descending score order
    (ties: earlier index first); each is matched to the still-unmatched true box
    it overlaps most, if that IoU is at least ``iou``. A true box is matched at
    most once, so duplicate detections of one face count as false detections.

    Returns ``(truth_of_det, det_of_truth)``: for every detection the index of
    the true box it matched (-1: a false detection), and for every true box the
    index of the detection that found it (-1: missed).
    """
    from facesocial.vision.boxes import iou_matrix

    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    detected = np.asarray(detected, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != len(detected):
        raise ValueError(f"{len(detected)} detections but {len(scores)} scores")
    truth_of_det = np.full(len(detected), -1, np.int64)
    det_of_truth = np.full(len(truth), -1, np.int64)
    if len(truth) == 0 or len(detected) == 0:
        return truth_of_det, det_of_truth
    overlap = iou_matrix(detected, truth).astype(np.float64)  # (dets, truth)
    for d in np.argsort(-scores, kind="stable"):
        row = np.where(det_of_truth < 0, overlap[d], -1.0)
        t = int(np.argmax(row))
        if row[t] >= iou:
            truth_of_det[d], det_of_truth[t] = t, d
    return truth_of_det, det_of_truth
