"""The engine end to end on the labelled photos: counts, verification, tasks, fallbacks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from facesocial.engine import Engine, parse_tasks
from facesocial.errors import IncompatibleEmbeddings, NoFaceFound, UnknownTask
from facesocial.results import Embedding
from facesocial.settings import Settings
from facesocial.vision.image import load_image

EMBEDDERS = ["w600k_mbf_folded", "mobilefacenet", "dlib_resnet"]


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    return Engine(settings)


@pytest.fixture(scope="module")
def single_faces(labels: dict) -> dict[str, str]:
    return {k: v["identity"] for k, v in labels["faces"].items() if v["faces"] == 1}


def test_default_models_are_the_most_accurate_installed(engine: Engine) -> None:
    assert engine.resolve("face_detection").id == "yunet"
    assert engine.resolve("face_embedding").id == "w600k_mbf_folded"


def test_exact_face_counts(engine: Engine, labels: dict, testdata: Path) -> None:
    for name, entry in labels["faces"].items():
        analysis = engine.analyze(testdata / name, ["detect"])
        assert len(analysis.faces) == entry["faces"], name
        assert analysis.detection is not None


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_verification_on_labelled_pairs(engine: Engine, single_faces: dict[str, str],
                                        testdata: Path, embedder: str) -> None:
    emb = {k: engine.embed_largest(testdata / k, embedder=embedder) for k in single_faces}
    for a, b in itertools.combinations(sorted(emb), 2):
        v = engine.compare(emb[a], emb[b])
        same = single_faces[a] == single_faces[b]
        assert v.match == same, (embedder, a, b, v.score, v.threshold)
        assert v.model.id == embedder and v.false_match_rate is not None


def test_embedding_does_not_depend_on_batch_mates(engine: Engine, testdata: Path) -> None:
    rgb = load_image(testdata / "faces/group_obama_biden.jpg").rgb
    dets = engine.detect(rgb)
    emb = engine.embedder("w600k_mbf_folded")
    from facesocial.vision.alignment import align_faces

    crops = align_faces(rgb, dets.landmarks)
    batch = np.concatenate([crops, crops, crops])[:8]
    together = emb.embed_crops(batch)
    alone = np.concatenate([emb.embed_crops(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_analyze_all_tasks_names_every_model(engine: Engine, testdata: Path) -> None:
    a = engine.analyze(testdata / "faces/group_kit_rose.jpg", "all")
    assert len(a.faces) == 2 and a.objects is not None
    for f in a.faces:
        assert f.embedding and f.liveness and f.demographics and f.deepfake
    ids = {m["id"] for m in a.models()}
    assert {"yunet", "w600k_mbf_folded", "antispoof_binary", "antispoof_print_replay",
            "dlib_age", "dlib_gender", "meso4_deepfake", "yolox_nano"} <= ids
    assert all(m["version"] for m in a.models())
    d = a.to_dict()
    assert d["face_count"] == 2 and "vector" not in d["faces"][0]["embedding"]


def test_embeddings_of_different_models_are_never_compared(engine: Engine) -> None:
    from facesocial.runtime import ModelRef

    a = Embedding(np.ones(4, np.float32) / 2, ModelRef("mobilefacenet", "x"))
    b = Embedding(np.ones(4, np.float32) / 2, ModelRef("dlib_resnet", "y"))
    with pytest.raises(IncompatibleEmbeddings):
        engine.compare(a, b)


def test_no_face_and_unknown_task(engine: Engine) -> None:
    blank = np.full((200, 200, 3), 127, np.uint8)
    with pytest.raises(NoFaceFound):
        engine.embed_largest(blank)
    assert engine.analyze(blank, ["detect"]).faces == ()
    with pytest.raises(UnknownTask):
        parse_tasks("detect,levitate")
    assert parse_tasks("embed") == ("detect", "embed")


def test_pip_carried_models_alone(tmp_path: Path, labels: dict, testdata: Path,
                                  single_faces: dict[str, str]) -> None:
    """No ONNX pack installed: dlib HOG + dlib ResNet + Cydral demographics still work."""
    engine = Engine(Settings(model_dir=tmp_path / "empty-home"))
    assert engine.resolve("face_detection").id == "dlib_hog"
    assert engine.resolve("face_embedding").id == "dlib_resnet"
    picks = ["faces/obama_1.jpg", "faces/obama_2.jpg", "faces/biden_1.jpg",
             "faces/kit_harington_1.jpg", "faces/rose_leslie_1.jpg"]
    for name in picks:
        a = engine.analyze(testdata / name, ["detect", "embed", "demographics"])
        assert len(a.faces) == 1, name
        assert a.faces[0].demographics is not None
        assert a.faces[0].detector.id == "dlib_hog"
    assert engine.verify(testdata / picks[0], testdata / picks[1]).match
    assert not engine.verify(testdata / picks[0], testdata / picks[2]).match
    assert not engine.verify(testdata / picks[3], testdata / picks[4]).match
