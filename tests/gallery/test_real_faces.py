"""Real embeddings of the labelled photos: enrol one photo per person, recognise the others."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from facesocial.engine import Engine
from facesocial.gallery import EnrolItem, Gallery
from facesocial.results import Embedding
from facesocial.settings import Settings

PEOPLE = ["obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"]


class Photos:
    """Embeddings of the test photos, computed once per module."""

    def __init__(self, settings: Settings, testdata: Path) -> None:
        engine = Engine(settings)
        faces = testdata / "faces"

        def one(name: str) -> tuple[Embedding, str]:
            path = faces / name
            return engine.embed_largest(path), hashlib.sha256(path.read_bytes()).hexdigest()

        self.enrol = {p: one(f"{p}_1.jpg") for p in PEOPLE}
        self.probes = {p: one(f"{p}_2.jpg")[0] for p in PEOPLE}
        self.stranger = one("lin_manuel_miranda.png")[0]
        self.groups = {
            name: [f.embedding for f in engine.analyze(faces / name, ["detect", "embed"]).faces]
            for name in ("group_obama_biden.jpg", "group_kit_rose.jpg")}
        model = self.stranger.model
        self.threshold = engine.threshold(engine.catalog.get(model.id))[0]


@pytest.fixture(scope="module")
def photos(settings: Settings, testdata: Path) -> Photos:
    return Photos(settings, testdata)


def test_recognises_enrolled_people_in_real_photos(gallery: Gallery, photos: Photos) -> None:
    ids = {}
    for person, (embedding, digest) in photos.enrol.items():
        ident = gallery.create_identity(person)
        gallery.enrol(ident.id, [EnrolItem(embedding, digest)])
        ids[person] = ident.id
    # the same photo again is recognised as a repeat, not a new face
    again = gallery.enrol(ids["obama"], [EnrolItem(*photos.enrol["obama"])])
    assert again[0].outcome.value == "existing"
    for person, probe in photos.probes.items():
        top = gallery.search(probe, k=3)[0]
        assert top.identity_id == ids[person] and top.score >= photos.threshold, (person, top)
    # threshold defaults to the model's calibrated one from the catalog
    solo = gallery.recognize([photos.probes["biden"], photos.stranger])
    assert solo.threshold == pytest.approx(photos.threshold)
    assert [f.identity_id for f in solo.faces] == [ids["biden"], None]
    pair = gallery.recognize(photos.groups["group_obama_biden.jpg"])
    named = sorted(f.name for f in pair.faces if f.known)
    assert named == ["biden", "obama"]  # the third face, a child, stays unknown
    kit_rose = gallery.recognize(photos.groups["group_kit_rose.jpg"])
    assert sorted(f.name for f in kit_rose.faces if f.known) == ["kit_harington", "rose_leslie"]
