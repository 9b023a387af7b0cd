"""The in-process vector index: exact and HNSW search, mutation, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from facesocial.errors import IncompatibleEmbeddings
from facesocial.gallery.index import (
    HNSW_EXPANSION_MAX,
    HNSW_EXPANSION_REF,
    HNSW_EXPANSION_SEARCH,
    HNSW_OVERSAMPLE,
    GalleryIndex,
    VectorIndex,
    expansion_for,
)

from .synth import near, unit


def _clustered(rng: np.random.Generator, n_ids: int, per: int, dim: int, cos: float = 0.7):
    """A gallery shaped like a real one: identities, each with a few faces near a centre."""
    centres = unit(rng, dim, n_ids)
    vecs = np.stack([near(rng, c, cos) for c in centres for _ in range(per)])
    owners = [f"id{i}" for i in range(n_ids) for _ in range(per)]
    probes = np.stack([near(rng, c, cos) for c in centres[:200]])
    return vecs, owners, probes


def test_exact_search_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 32, 300)
    idx = VectorIndex(32, hnsw_min=10_000)
    idx.add_many([f"f{i}" for i in range(300)], [f"i{i % 50}" for i in range(300)], vecs)
    q = unit(rng, 32, 5)
    got = idx.search(q, 7)
    want = np.argsort(-(q @ vecs.T), axis=1)[:, :7]
    assert [[h.face_id for h in row] for row in got] == [[f"f{i}" for i in r] for r in want]
    assert got[0][0].score == pytest.approx(float(q[0] @ vecs[want[0, 0]]), abs=1e-5)
    assert idx.mode == "exact"


def test_add_remove_and_identity_removal() -> None:
    rng = np.random.default_rng(2)
    idx = VectorIndex(16, hnsw_min=10_000)
    v = unit(rng, 16, 4)
    for i in range(4):
        idx.add(f"f{i}", "a" if i < 2 else "b", v[i])
    assert len(idx) == 4 and idx.identities() == 2
    assert idx.remove("f0") and not idx.remove("f0")
    assert idx.search(v[0], 1)[0][0].face_id != "f0"
    assert idx.search(v[3], 1)[0][0].face_id == "f3"  # moved row still found
    assert idx.remove_identity("b") == 2 and len(idx) == 1
    idx.add("f1", "c", v[2])  # re-adding a face id replaces it
    assert len(idx) == 1 and idx.search(v[2], 1)[0][0] == ("f1", "c", pytest.approx(1.0))
    with pytest.raises(IncompatibleEmbeddings):
        idx.add("x", "a", unit(rng, 8))
    with pytest.raises(IncompatibleEmbeddings):
        idx.search(unit(rng, 8), 1)


def test_hnsw_recall_and_same_top1_as_exact() -> None:
    rng = np.random.default_rng(3)
    vecs, owners, probes = _clustered(rng, 1000, 3, 512)
    ids = [f"f{i}" for i in range(len(vecs))]
    exact = VectorIndex(512, hnsw_min=1_000_000)
    hnsw = VectorIndex(512, hnsw_min=100)
    exact.add_many(ids, owners, vecs)
    hnsw.add_many(ids, owners, vecs)
    assert hnsw.mode == "hnsw" and exact.mode == "exact"
    ref = exact.search(probes, 10)
    got = hnsw.search(probes, 10)
    recall = np.mean([len({h.face_id for h in g} & {h.face_id for h in r}) / 10
                      for g, r in zip(got, ref, strict=True)])
    assert recall >= 0.99, recall
    # the same top-1 identity always; the same top-1 face almost always (the graph is built
    # by several threads, so it differs a little between runs)
    assert [g[0].identity_id for g in got] == [r[0].identity_id for r in ref] == \
        [f"id{i}" for i in range(200)]
    assert np.mean([g[0].face_id == r[0].face_id for g, r in zip(got, ref, strict=True)]) >= 0.98
    for g, r in zip(got, ref, strict=True):  # scores are exact (re-ranked), not approximated
        common = {h.face_id: h.score for h in r}
        for h in g:
            if h.face_id in common:
                assert h.score == pytest.approx(common[h.face_id], abs=1e-6)


def test_hnsw_switches_on_and_off_with_hysteresis() -> None:
    rng = np.random.default_rng(4)
    idx = VectorIndex(32, hnsw_min=40)
    vecs = unit(rng, 32, 60)
    for i in range(39):
        idx.add(f"f{i}", f"i{i}", vecs[i])
    assert idx.mode == "exact"
    idx.add("f39", "i39", vecs[39])
    assert idx.mode == "hnsw"
    for i in range(40, 60):
        idx.add(f"f{i}", f"i{i}", vecs[i])
    for i in range(0, 35):  # 25 left: >= 20 (half), still HNSW
        idx.remove(f"f{i}")
    assert idx.mode == "hnsw" and len(idx) == 25
    assert idx.search(vecs[50], 1)[0][0].face_id == "f50"
    for i in range(35, 45):
        idx.remove(f"f{i}")
    assert idx.mode == "exact" and len(idx) == 15
    assert idx.search(vecs[55], 1)[0][0].face_id == "f55"


def test_concurrent_adds_removes_and_searches() -> None:
    rng = np.random.default_rng(5)
    gi = GalleryIndex(hnsw_min=50)
    vecs = unit(rng, 32, 400)
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        try:
            for i in range(start, start + 100):
                gi.add(("m", "1"), f"f{i}", f"i{i % 37}", vecs[i])
                if i % 3 == 0:
                    gi.remove(("m", "1"), f"f{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(200):
                idx = gi.get(("m", "1"))
                if idx is not None:
                    for row in idx.search(vecs[i % 400], 5):
                        assert len(row) <= 5
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 100, 200, 300)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    idx = gi.get(("m", "1"))
    assert idx is not None and len(idx) == 400 - len(range(0, 400, 3))
    assert set(idx.snapshot()) == {f"f{i}" for i in range(400) if i % 3}


def test_hnsw_reranks_oversampled_graph_candidates() -> None:
    """The graph proposes HNSW_OVERSAMPLE x k candidates (its i8 distances misorder
    near-ties); the hits are the best k of them by exact float32 cosine, best first."""
    rng = np.random.default_rng(6)
    vecs = unit(rng, 64, 600)
    idx = VectorIndex(64, hnsw_min=100, expansion_search=16)  # below the candidates asked
    idx.add_many([f"f{i}" for i in range(600)], [f"i{i}" for i in range(600)], vecs)
    assert idx.mode == "hnsw"
    graph = idx._hnsw
    asked: list[int] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(graph, name)

        def __setattr__(self, name: str, value: object) -> None:
            setattr(graph, name, value)

        def search(self, q: np.ndarray, count: int) -> object:
            asked.append(count)
            return graph.search(q, count)

    idx._hnsw = Spy()
    q = unit(rng, 64, 3)
    got = idx.search(q, 5)
    assert asked == [5 * HNSW_OVERSAMPLE]
    assert graph.expansion_search >= 5 * HNSW_OVERSAMPLE
    for r, row in enumerate(got):
        assert len(row) == 5
        exact = [float(q[r] @ vecs[int(h.face_id[1:])]) for h in row]
        assert [h.score for h in row] == pytest.approx(exact, abs=1e-6)
        assert exact == sorted(exact, reverse=True)


def test_search_width_grows_with_the_gallery_unless_fixed() -> None:
    assert expansion_for(10) == expansion_for(HNSW_EXPANSION_REF) == HNSW_EXPANSION_SEARCH
    widths = [expansion_for(n) for n in (200_000, 500_000, 1_000_000, 10**10)]
    assert widths == sorted(widths) and widths[-1] == HNSW_EXPANSION_MAX
    assert expansion_for(1_000_000) == 2 * HNSW_EXPANSION_SEARCH  # x2 per 10x faces
    rng = np.random.default_rng(7)
    auto, fixed = VectorIndex(32, hnsw_min=50), VectorIndex(32, hnsw_min=50, expansion_search=64)
    vecs = unit(rng, 32, 80)
    for idx in (auto, fixed):
        idx.add_many([f"f{i}" for i in range(80)], [f"i{i}" for i in range(80)], vecs)
        assert idx.mode == "hnsw" and idx.search(vecs[3], 1)[0][0].face_id == "f3"
    assert auto.search_width() == HNSW_EXPANSION_SEARCH and fixed.search_width() == 64
    assert auto._hnsw.expansion_search == HNSW_EXPANSION_SEARCH


def test_the_width_setting_reaches_every_model_index() -> None:
    rng = np.random.default_rng(8)
    fixed, auto = GalleryIndex(hnsw_min=50, expansion_search=77), GalleryIndex(hnsw_min=50)
    for gi in (fixed, auto):
        gi.add(("m", "1"), "f0", "i0", unit(rng, 16, 1)[0])
    assert fixed.get(("m", "1")).search_width() == 77
    assert auto.get(("m", "1")).search_width() == HNSW_EXPANSION_SEARCH
