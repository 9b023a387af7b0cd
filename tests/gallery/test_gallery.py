"""The gallery service end to end, on SQLite (in-process index) and PostgreSQL (pgvector)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text

from facesocial.db.session import engine_for_url, session_factory
from facesocial.errors import (
    IncompatibleEmbeddings,
    InvalidInput,
    NoGalleryForModel,
    NotFound,
)
from facesocial.gallery import AddOutcome, Gallery
from facesocial.gallery import repository as repo
from facesocial.runtime import ModelRef
from facesocial.settings import Settings

from .synth import DIM, MODEL, MODEL_B, THRESHOLD, emb, item, near, unit


def _enrol_people(gallery: Gallery, rng: np.random.Generator, n: int = 20,
                  per: int = 3) -> dict[str, np.ndarray]:
    """n identities with ``per`` faces each near a random centre; returns id -> centre."""
    centres: dict[str, np.ndarray] = {}
    for i in range(n):
        ident = gallery.create_identity(f"person {i}", {"team": "red" if i % 2 else "blue",
                                                        "n": i})
        c = unit(rng)
        gallery.enrol(ident.id, [item(near(rng, c, 0.8), f"{ident.id}/{j}") for j in range(per)])
        centres[ident.id] = c
    return centres


def test_enrol_and_search_top1(gallery: Gallery) -> None:
    rng = np.random.default_rng(10)
    centres = _enrol_people(gallery, rng)
    for iid, c in centres.items():
        got = gallery.search(emb(near(rng, c, 0.8)), k=3)
        assert got[0].identity_id == iid and got[0].score > THRESHOLD
        assert got[0].name.startswith("person ")
        assert len(got) == 3 and len({m.identity_id for m in got}) == 3  # best per identity
        assert got[0].score >= got[1].score >= got[2].score


def test_strangers_are_unknown(gallery: Gallery) -> None:
    rng = np.random.default_rng(11)
    centres = _enrol_people(gallery, rng, n=10)
    known = list(centres.items())[:2]
    probes = [emb(near(rng, c, 0.8)) for _, c in known] + [emb(unit(rng)) for _ in range(3)]
    rec = gallery.recognize(probes, threshold=THRESHOLD, k=3)
    assert [f.identity_id for f in rec.faces] == [known[0][0], known[1][0], None, None, None]
    for f in rec.faces[2:]:
        assert not f.known and f.score < THRESHOLD and len(f.candidates) == 3
    assert rec.faces[0].face_id is not None and rec.model == MODEL


def test_one_identity_per_face_in_an_image(gallery: Gallery) -> None:
    rng = np.random.default_rng(12)
    a = gallery.create_identity("a")
    b = gallery.create_identity("b")
    ca, cb = unit(rng), unit(rng)
    gallery.enrol(a.id, [item(ca, "a")])
    gallery.enrol(b.id, [item(cb, "b")])
    # both faces resemble a most; the second also resembles b well enough
    f2 = 0.75 * ca + 0.66 * cb
    f2 /= np.linalg.norm(f2)
    rec = gallery.recognize([emb(ca), emb(f2)], threshold=THRESHOLD)
    assert rec.faces[1].candidates[0].identity_id == a.id  # a is face 2's best match too
    assert [f.identity_id for f in rec.faces] == [a.id, b.id]
    assert rec.faces[1].score == pytest.approx(float(f2 @ cb), abs=1e-4)


def test_idempotent_re_enrolment_and_version_replacement(gallery: Gallery) -> None:
    rng = np.random.default_rng(13)
    ident = gallery.create_identity("x")
    v = unit(rng)
    first = gallery.enrol(ident.id, [item(v, "img1"), item(v, "img1")])
    assert [d.outcome for d in first] == [AddOutcome.CREATED, AddOutcome.EXISTING]
    assert first[0].face.id == first[1].face.id
    again = gallery.enrol(ident.id, [item(unit(rng), "img1")])  # same image: nothing written
    assert again[0].outcome is AddOutcome.EXISTING and again[0].face.id == first[0].face.id
    assert gallery.list_faces(identity_id=ident.id).total == 1
    assert gallery.search(emb(v))[0].score == pytest.approx(1.0, abs=1e-5)
    # the same image embedded by a new version of the model replaces the old embedding
    v2 = unit(rng)
    new = ModelRef(MODEL.id, "v2")
    rep = gallery.enrol(ident.id, [item(v2, "img1", model=new)])
    assert rep[0].outcome is AddOutcome.REPLACED and rep[0].face.id == first[0].face.id
    assert gallery.list_faces(identity_id=ident.id).total == 1
    with pytest.raises(NoGalleryForModel):
        gallery.search(emb(v))
    assert gallery.search(emb(v2, new))[0].face_id == first[0].face.id
    assert gallery.consistency_check().ok


def test_delete_face_and_identity(gallery: Gallery) -> None:
    rng = np.random.default_rng(14)
    centres = _enrol_people(gallery, rng, n=5, per=2)
    iid, c = next(iter(centres.items()))
    faces = gallery.list_faces(identity_id=iid).items
    gallery.delete_face(faces[0].id)
    assert gallery.consistency_check().ok
    with pytest.raises(NotFound):
        gallery.delete_face(faces[0].id)
    assert gallery.search(emb(c))[0].face_id == faces[1].id
    assert gallery.delete_identity(iid) == 1
    with pytest.raises(NotFound) as err:
        gallery.get_identity(iid)
    assert err.value.code == "not_found" and err.value.status == 404
    assert all(m.identity_id != iid for m in gallery.search(emb(c), k=10))
    assert gallery.consistency_check().ok


def test_models_are_never_mixed(gallery: Gallery) -> None:
    rng = np.random.default_rng(15)
    a = gallery.create_identity("a")
    b = gallery.create_identity("b")
    v = unit(rng)
    gallery.enrol(a.id, [item(v, "a", model=MODEL)])
    gallery.enrol(b.id, [item(v, "b", model=MODEL_B)])  # same vector, other model
    assert [m.identity_id for m in gallery.search(emb(v, MODEL), k=5)] == [a.id]
    assert [m.identity_id for m in gallery.search(emb(v, MODEL_B), k=5)] == [b.id]
    with pytest.raises(NoGalleryForModel) as err:
        gallery.search(emb(v, ModelRef("other", "1")))
    assert err.value.code == "no_gallery_for_model"
    assert {m["id"] for m in err.value.details["gallery_models"]} == {MODEL.id, MODEL_B.id}
    with pytest.raises(IncompatibleEmbeddings):  # one model version has one dimension
        gallery.enrol(a.id, [item(unit(rng, DIM * 2), "wide", model=MODEL)])
    with pytest.raises(IncompatibleEmbeddings):
        gallery.search(emb(unit(rng, DIM * 2), MODEL))
    with pytest.raises(IncompatibleEmbeddings):
        gallery.recognize([emb(v, MODEL), emb(v, MODEL_B)], threshold=0.5)


def test_enrol_is_all_or_nothing(gallery: Gallery) -> None:
    rng = np.random.default_rng(16)
    ident = gallery.create_identity("x")
    with pytest.raises(InvalidInput):  # bad hash in the second item: nothing written
        gallery.enrol(ident.id, [item(unit(rng), "ok"),
                                 replace(item(unit(rng), "bad"), image_sha256="zz")])
    with pytest.raises(IncompatibleEmbeddings):  # dim clash found in the DB step: rolled back
        gallery.enrol(ident.id, [item(unit(rng), "ok"), item(unit(rng, DIM + 1), "bad")])
    with pytest.raises(NotFound):
        gallery.enrol("nobody", [item(unit(rng), "ok")])
    assert gallery.list_faces().total == 0
    assert gallery.consistency_check().ok


def test_identity_listing_filters_and_updates(gallery: Gallery) -> None:
    rng = np.random.default_rng(17)
    _enrol_people(gallery, rng, n=12, per=1)
    page = gallery.list_identities(limit=5)
    assert page.total == 12 and len(page.items) == 5 and page.items[0].face_count == 1
    rest = gallery.list_identities(offset=10, limit=5)
    assert len(rest.items) == 2
    assert gallery.list_identities(name_contains="PERSON 1").total == 3  # 1, 10, 11
    assert gallery.list_identities(name_contains="%").total == 0  # wildcards are literal
    assert gallery.list_identities(metadata={"team": "red"}).total == 6
    assert gallery.list_identities(metadata={"team": "red", "n": 3}).total == 1
    one = gallery.list_identities(metadata={"n": 3}).items[0]
    upd = gallery.update_identity(one.id, name="Renamed", metadata={"vip": True},
                                  merge_metadata=True)
    assert upd.name == "Renamed" and upd.metadata == {"team": "red", "n": 3, "vip": True}
    assert gallery.list_identities(metadata={"vip": True}).items[0].id == one.id
    # filters from a query string are strings: they match numbers and booleans they spell
    assert [i.id for i in gallery.list_identities(metadata={"n": "3", "vip": "true"}).items] \
        == [one.id]
    assert gallery.list_identities(metadata={"n": "3.0"}).total == 1
    assert gallery.list_identities(metadata={"team": "3"}).total == 0
    assert gallery.list_identities(metadata={"vip": "false"}).total == 0
    assert gallery.list_identities(metadata={"missing": "x"}).total == 0
    assert gallery.search(emb(unit(rng)), k=12)  # names come from the database
    with pytest.raises(InvalidInput):
        gallery.list_identities(metadata={"bad key": "x"})


def test_random_mix_keeps_index_and_db_in_step(make_gallery: Callable[..., Gallery],
                                               engine: Engine) -> None:
    rng = np.random.default_rng(18)
    gallery = make_gallery(gallery_hnsw_min=30)  # crosses into HNSW and back on the way
    models = [MODEL, MODEL_B, ModelRef(MODEL.id, "v2")]
    owner: dict[str, str] = {}  # the expected state: face id -> identity id
    alive = [gallery.create_identity(f"p{i}").id for i in range(15)]
    sources: list[tuple[str, str]] = []  # (identity, image) pairs enrolled so far
    ops = {"enrol": 0, "repeat": 0, "delete_face": 0, "delete_identity": 0}
    for step in range(200):
        r = rng.random()
        if r < 0.6 or not owner:
            repeat = bool(sources) and rng.random() < 0.15
            if repeat:
                iid, src = sources[int(rng.integers(len(sources)))]
                if iid not in alive:
                    continue
            else:
                iid, src = alive[int(rng.integers(len(alive)))], f"img{step}"
                sources.append((iid, src))
            model = models[int(rng.integers(len(models)))]
            done = gallery.enrol(iid, [item(unit(rng), src, model=model)])[0]
            owner[done.face.id] = iid
            ops["repeat" if repeat else "enrol"] += 1
        elif r < 0.92:
            fid = sorted(owner)[int(rng.integers(len(owner)))]
            gallery.delete_face(fid)
            del owner[fid]
            ops["delete_face"] += 1
        elif len(alive) > 3:
            iid = alive.pop(int(rng.integers(len(alive))))
            gallery.delete_identity(iid)
            owner = {f: i for f, i in owner.items() if i != iid}
            ops["delete_identity"] += 1
    assert all(ops.values()), ops
    with session_factory(engine)() as s:
        stored = {fid: iid for fid, iid, *_ in repo.iter_face_rows(s)}
        present = {(c.model_id, c.model_version) for c in repo.model_counts(s)}
    assert stored == owner
    report = gallery.consistency_check()
    assert report.ok, report.to_dict()
    assert report.faces_in_db == report.faces_in_index == len(owner) > 0
    # a gallery started afresh from the database agrees and answers the same
    fresh = make_gallery(backend="memory")
    assert fresh.consistency_check().ok
    for model in models:
        if (model.id, model.version) in present:
            q = emb(unit(rng), model)
            assert [m.face_id for m in gallery.search(q, k=5)] == \
                [m.face_id for m in fresh.search(q, k=5)]


def test_hnsw_path_same_top1_as_exact(make_gallery: Callable[..., Gallery], engine: Engine,
                                      tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    approx = make_gallery(gallery_hnsw_min=50)  # SQLite: in-process HNSW
    pg_engine = None
    if engine.dialect.name == "postgresql":  # PG: SQL HNSW, with sequential scans forbidden
        pg_engine = engine_for_url(engine.url, connect_args={"options": "-c enable_seqscan=off"})
        approx = Gallery(session_factory(pg_engine),
                         Settings(data_dir=tmp_path, database_url=str(engine.url)))
    centres: list[tuple[str, np.ndarray]] = []
    for i in range(100):
        ident = approx.create_identity(f"p{i}")
        c = unit(rng)
        approx.enrol(ident.id, [item(near(rng, c, 0.75), f"{i}/{j}") for j in range(2)])
        centres.append((ident.id, c))
    exact = make_gallery(backend="memory", gallery_hnsw_min=10_000)
    if approx.backend == "memory":
        assert approx.index is not None and approx.index.stats()[0].mode == "hnsw"
    assert exact.index is not None and exact.index.stats()[0].mode == "exact"
    for iid, c in centres[:40]:
        q = emb(near(rng, c, 0.75))
        got, ref = approx.search(q, k=5), exact.search(q, k=5)
        assert got[0].identity_id == ref[0].identity_id == iid
        assert got[0].score == pytest.approx(ref[0].score, abs=1e-4)
    if pg_engine is not None:
        pg_engine.dispose()


def test_reindex_plan(gallery: Gallery) -> None:
    rng = np.random.default_rng(20)
    a = gallery.create_identity("a")
    b = gallery.create_identity("b")
    new = ModelRef("synthetic_new", "v9")
    gallery.enrol(a.id, [item(unit(rng), "a1"), item(unit(rng), "a2"),
                         item(unit(rng), "a1", model=new)])
    gallery.enrol(b.id, [item(unit(rng), "b1", model=MODEL_B)])
    plan = gallery.reindex_plan(new)
    assert plan.target == (new.id, new.version)
    assert plan.faces_to_reenrol == 3 and plan.identities_with_faces == 2
    assert plan.identities_ready == 1 and plan.identities_to_reenrol == (b.id,)
    actions = {(m.model_id, m.model_version): (m.action, m.faces) for m in plan.models}
    assert actions == {(MODEL.id, MODEL.version): ("re-enrol", 2),
                       (MODEL_B.id, MODEL_B.version): ("re-enrol", 1),
                       (new.id, new.version): ("keep", 1)}
    assert any("source images" in s for s in plan.steps)
    # after re-enrolment and a purge of the old models, nothing is left to do
    gallery.enrol(b.id, [item(unit(rng), "b1", model=new)])
    assert gallery.purge_model(MODEL.id, MODEL.version) == 2
    assert gallery.purge_model(MODEL_B.id, MODEL_B.version) == 1
    done = gallery.reindex_plan(new)
    assert done.nothing_to_do and done.identities_ready == 2
    assert gallery.consistency_check().ok


def test_pgvector_query_uses_the_partial_hnsw_index(gallery: Gallery, engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        assert gallery.backend == "memory"
        return
    rng = np.random.default_rng(21)
    ident = gallery.create_identity("a")
    gallery.enrol(ident.id, [item(unit(rng), f"s{i}") for i in range(40)])
    gallery.enrol(ident.id, [item(unit(rng, 32), "other", model=MODEL_B)])
    assert gallery.backend == "pgvector"
    report = gallery.consistency_check()
    assert report.ok and sum("HNSW index ix_faces_hnsw_" in n for n in report.notes) == 2
    pg = gallery._pg  # noqa: SLF001 - inspecting the plan needs the backend
    with session_factory(engine)() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = pg.explain(s, (MODEL.id, MODEL.version), DIM, unit(rng))
    from facesocial.gallery.pgvector import index_name

    assert index_name((MODEL.id, MODEL.version), DIM) in plan, plan


def test_index_failure_after_commit_is_repaired(make_gallery: Callable[..., Gallery],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from facesocial.gallery.index import GalleryIndex

    rng = np.random.default_rng(22)
    gallery = make_gallery(backend="memory")
    ident = gallery.create_identity("x")
    v = unit(rng)

    def broken(*_args: object, **_kw: object) -> None:
        raise MemoryError("simulated")

    monkeypatch.setattr(GalleryIndex, "add", broken)
    done = gallery.enrol(ident.id, [item(v, "a")])  # stored; the index is rebuilt from the DB
    monkeypatch.undo()
    assert gallery.consistency_check().ok
    assert gallery.search(emb(v))[0].face_id == done[0].face.id


def test_threads_enrol_delete_and_search_concurrently(gallery: Gallery) -> None:
    import threading

    rng = np.random.default_rng(23)
    idents = [gallery.create_identity(f"t{i}").id for i in range(4)]
    vecs = unit(rng, DIM, 80)
    gallery.enrol(idents[0], [item(unit(rng), "anchor")])  # never empty: searches can't 409
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for j in range(20):
                n = w * 20 + j
                out = gallery.enrol(idents[w], [item(vecs[n], f"w{w}/{j}")])
                if j % 4 == 0:
                    gallery.delete_face(out[0].face.id)
                gallery.search(emb(vecs[n]), k=3)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    report = gallery.consistency_check()
    assert report.ok and report.faces_in_db == 61, report.to_dict()


def test_two_writers_race_on_the_same_image(make_gallery: Callable[..., Gallery]) -> None:
    """Two processes' galleries (separate locks) enrol one image at once: one face results."""
    import threading

    rng = np.random.default_rng(24)
    first, second = make_gallery(), make_gallery()
    ident = first.create_identity("x")
    v = unit(rng)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run(g: Gallery) -> None:
        barrier.wait()
        try:
            results.append(g.enrol(ident.id, [item(v, "same")])[0])
        except BaseException as exc:  # noqa: BLE001
            results.append(exc)

    threads = [threading.Thread(target=run, args=(g,)) for g in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, BaseException) for r in results), results
    assert len({r.face.id for r in results}) == 1  # type: ignore[attr-defined]
    assert sorted(r.outcome.value for r in results) == ["created", "existing"]  # type: ignore[attr-defined]
    assert first.list_faces(identity_id=ident.id).total == 1


def test_a_second_process_sees_writes_through_the_change_log(engine: Engine,
                                                              tmp_path: Path) -> None:
    """Two Gallery objects with their own database engines stand for two processes (an API
    process and a batch worker): what one writes, the other's search finds, and deletions
    disappear, with the in-process index (SQLite) replaying the change log."""
    settings = Settings(data_dir=tmp_path, database_url=str(engine.url))
    other_engine = engine_for_url(engine.url)
    try:
        writer = Gallery(session_factory(engine), settings)
        reader = Gallery(session_factory(other_engine), settings)
        rng = np.random.default_rng(21)
        centres = _enrol_people(writer, rng, n=6, per=2)
        for iid, c in centres.items():
            assert reader.search(emb(near(rng, c, 0.8)), k=1)[0].identity_id == iid
        gone, kept = list(centres)[:2], list(centres)[2:]
        writer.delete_identity(gone[0])
        face = writer.list_faces(identity_id=gone[1]).items[0]
        writer.delete_face(face.id)
        hits = reader.search(emb(near(rng, centres[gone[0]], 0.8)), k=6)
        assert gone[0] not in {m.identity_id for m in hits}
        assert face.id not in {m.face_id for m in
                               reader.search(emb(near(rng, centres[gone[1]], 0.8)), k=6)}
        assert reader.consistency_check().ok
        # a reader far behind a pruned log rebuilds instead of missing changes
        c = unit(rng)
        ident = writer.create_identity("late")
        writer.enrol(ident.id, [item(c, "late/1")])
        with session_factory(engine).begin() as s:
            assert repo.prune_changes(s, repo.utcnow() + timedelta(days=1)) > 0
        writer.enrol(ident.id, [item(near(rng, c, 0.9), "late/2")])  # a new change, after a gap
        if reader.backend == "memory":
            assert reader.sync() == -1  # rebuilt from the database
        assert reader.search(emb(c), k=1)[0].identity_id == ident.id
        assert reader.consistency_check().ok
        assert reader.stats() == writer.stats()
        assert {m.identity_id for m in reader.search(emb(unit(rng)), k=10)} == {*kept, ident.id,
                                                                                gone[1]}
    finally:
        other_engine.dispose()


def test_the_search_backend_comes_from_the_settings(engine: Engine, tmp_path: Path) -> None:
    """PostgreSQL deployments may search in process (FACESOCIAL_GALLERY_BACKEND=memory);
    SQLite has no pgvector and says so."""
    def make(choice: str) -> Gallery:
        return Gallery(session_factory(engine), Settings(
            data_dir=tmp_path, database_url=str(engine.url), gallery_backend=choice))

    assert make("memory").backend == "memory"
    if engine.dialect.name == "postgresql":
        assert make("auto").backend == make("pgvector").backend == "pgvector"
    else:
        assert make("auto").backend == "memory"
        with pytest.raises(ValueError, match="needs PostgreSQL"):
            make("pgvector")
