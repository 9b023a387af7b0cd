"""Templates and one-to-one identity assignment."""

from __future__ import annotations

import numpy as np
import pytest

from facesocial.recognition import assign_identities, template_scores
from facesocial.vision.embedding import l2_normalize


def test_two_faces_cannot_claim_one_identity() -> None:
    # face 0 and face 1 both resemble identity 0 most; face 1 is also close to identity 1
    scores = np.array([[0.90, 0.10], [0.85, 0.60]])
    got = assign_identities(scores, threshold=0.5)
    assert [(a.face, a.identity) for a in got] == [(0, 0), (1, 1)]


def test_below_threshold_is_unknown_and_greedy_would_be_wrong() -> None:
    scores = np.array([[0.70, 0.65], [0.68, 0.20]])
    # greedy (best first) gives face0->id0, face1 unknown; optimal gives face0->id1, face1->id0
    got = assign_identities(scores, threshold=0.5)
    assert [(a.identity) for a in got] == [1, 0]
    assert [a.identity for a in assign_identities(scores, threshold=0.9)] == [-1, -1]


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_empty(shape: tuple[int, int]) -> None:
    got = assign_identities(np.zeros(shape), 0.3)
    assert len(got) == shape[0] and all(a.identity == -1 for a in got)


def test_template_modes() -> None:
    rng = np.random.default_rng(0)
    g = l2_normalize(rng.normal(size=(5, 8)))
    owners = np.array([0, 0, 1, 1, 1])
    p = g[[0, 3]]
    mx = template_scores(p, g, owners, 3, "max")
    assert mx[0, 0] == pytest.approx(1.0, abs=1e-6) and mx[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert (mx[:, 2] == -1).all()
    mean = template_scores(p, g, owners, 3, "mean")
    assert mean[0, 0] < 1.0 and mean.shape == (2, 3)
    with pytest.raises(ValueError):
        template_scores(p, g, owners, 3, "median")
