"""1:N recognition maths, pure numpy: identity templates and one-to-one assignment.

The gallery (a later module) stores embeddings; these functions decide, for
the faces in one image, which enrolled identity each one is. An identity is
assigned to at most one face per image: the assignment maximises the total
similarity over faces x identities (Hungarian algorithm), then drops pairs
under the threshold, so two look-alike faces cannot both claim one person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from facesocial.vision.embedding import l2_normalize


def template_scores(probes: np.ndarray, gallery: np.ndarray, owners: np.ndarray,
                    n_identities: int, mode: str = "max") -> np.ndarray:
    """Similarity of each probe to each identity, from all its enrolled faces.

    ``probes`` (p, d) and ``gallery`` (g, d) are L2-normalised; ``owners`` (g,)
    gives each gallery row's identity index in [0, n_identities). ``mode`` is
    ``"max"`` (best matching enrolled face) or ``"mean"`` (cosine to the
    re-normalised mean embedding). Identities without faces score -1.
    """
    probes = np.asarray(probes, np.float32)
    gallery = np.asarray(gallery, np.float32)
    owners = np.asarray(owners, np.int64)
    out = np.full((len(probes), n_identities), -1.0, np.float32)
    if len(gallery) == 0 or len(probes) == 0:
        return out
    if mode == "mean":
        sums = np.zeros((n_identities, gallery.shape[1]), np.float32)
        np.add.at(sums, owners, gallery)
        present = np.bincount(owners, minlength=n_identities) > 0
        out[:, present] = probes @ l2_normalize(sums[present]).T
        return out
    if mode != "max":
        raise ValueError(f"unknown template mode '{mode}'")
    sims = probes @ gallery.T  # (p, g)
    for ident in np.unique(owners):
        out[:, ident] = sims[:, owners == ident].max(axis=1)
    return out


@dataclass(frozen=True, slots=True)
class Assignment:
    face: int
    identity: int  # column index, or -1 for unknown
    score: float  # similarity to the assigned identity (best score when unknown)


def assign_identities(scores: np.ndarray, threshold: float) -> list[Assignment]:
    """One identity per face and one face per identity, maximising total similarity.

    ``scores`` is (faces, identities). Faces left without an identity, or whose
    assigned similarity is under ``threshold``, come back as unknown (-1).
    """
    scores = np.asarray(scores, np.float64)
    n_faces = scores.shape[0] if scores.ndim == 2 else 0
    result = [Assignment(i, -1, float(scores[i].max()) if scores.shape[1] else -1.0)
              for i in range(n_faces)]
    if n_faces == 0 or scores.shape[1] == 0:
        return result
    # only pairs above the threshold are worth assigning; others get a large cost
    gain = np.where(scores >= threshold, scores, -1e6)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    for r, c in zip(rows, cols, strict=True):
        if scores[r, c] >= threshold:
            result[r] = Assignment(int(r), int(c), float(scores[r, c]))
    return result
