"""`facesocial eval` and the runners behind it, on the dev sets (../shared/testdata/dev).

Floors sit a little under what the default models measure on the full dev sets
(figures in the comments; single-thread CPU, see the test data's dev_sets notes).
They guard against regressions in detection, alignment, embedding, thresholds
and anti-spoofing, not against a few flipped decisions.

Cost (one ONNX Runtime thread): the runner embeds each of the 2070 CFP photos
once (about 1.5 min); the CLI runs on CFP use a deterministic subset
(``_cfp_subset``: the first 20 genuine and 20 impostor pairs of every protocol
and fold, 240 pairs, 237 photos), checked pair by pair against the runner on
the same subset. WIDER (5 photos, twice: yunet defaults and scrfd_2.5g at
8 px / 0.45) and NUAA (360 frames) run in full through both; the human-table
runs use small subsets. The full sets through the CLI: see docs or the report
of ``facesocial eval``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from facesocial.cli_eval import EXIT_INPUT, EXIT_MODEL, EXIT_OK, eval_app
from facesocial.engine import Engine
from facesocial.errors import InvalidInput
from facesocial.evaluate import (
    DetectReport,
    PadReport,
    VerifyReport,
    evaluate_antispoof,
    evaluate_detect,
    evaluate_verify,
    read_counts,
    read_pad_labels,
    read_pairs,
)
from facesocial.evaluation import match_detections
from facesocial.settings import Settings

runner = CliRunner()
SCRFD_OPTS = dict(detector="scrfd_2.5g", min_face_size=8, score_threshold=0.45)


# --------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def engine(settings: Settings):
    # One ONNX Runtime thread: these runs are many small images, and on a shared 2-core
    # machine two threads per session made them 3-9x slower in wall time (spinning
    # workers waiting for each other), with no more work done.
    eng = Engine(settings.model_copy(update={"intra_op_threads": 1}))
    yield eng
    close = getattr(eng, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="module")
def dev(testdata: Path) -> Path:
    return testdata / "dev"


@pytest.fixture()
def env(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the CLI's Settings() reads: the test model home, one thread (see engine)."""
    monkeypatch.setenv("FACESOCIAL_MODEL_DIR", str(model_home))
    monkeypatch.setenv("FACESOCIAL_INTRA_OP_THREADS", "1")
    return model_home


@pytest.fixture(scope="module")
def cfp(engine: Engine, dev: Path) -> tuple[VerifyReport, list[tuple[int, int]]]:
    """The full CFP dev run (every photo embedded once) and the progress calls."""
    calls: list[tuple[int, int]] = []
    report = evaluate_verify(engine, dev / "cfp/pairs.csv", dev / "cfp",
                             progress=lambda d, t: calls.append((d, t)))
    return report, calls


@pytest.fixture(scope="module")
def wider(engine: Engine, dev: Path) -> DetectReport:
    return evaluate_detect(engine, dev / "wider/counts.json")


@pytest.fixture(scope="module")
def wider_scrfd(engine: Engine, dev: Path) -> DetectReport:
    return evaluate_detect(engine, dev / "wider/counts.json", **SCRFD_OPTS)


@pytest.fixture(scope="module")
def nuaa(engine: Engine, dev: Path) -> PadReport:
    return evaluate_antispoof(engine, dev / "nuaa/labels.json")


def _cfp_subset(dev: Path, target: Path, per_group: int = 20) -> Path:
    """First ``per_group`` genuine and impostor pairs of every (protocol, fold), file order."""
    with open(dev / "cfp/pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = []
    for key in dict.fromkeys((r["protocol"], r["fold"]) for r in rows):
        group = [r for r in rows if (r["protocol"], r["fold"]) == key]
        keep += [r for r in group if r["same"] == "1"][:per_group]
        keep += [r for r in group if r["same"] == "0"][:per_group]
    with open(target, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return target


def _invoke(*args: str):
    res = runner.invoke(eval_app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output, res.output
    return res


# ----------------------------------------------------------- verification
@pytest.mark.slow
def test_cfp_verify_floors(cfp: tuple[VerifyReport, list]) -> None:
    report, calls = cfp
    assert report.embedder["id"] == "w600k_mbf_folded" and report.threshold_name == "default"
    assert report.photos == 2070 and len(report.results) == 4200
    assert calls[0] == (0, 2070) and calls[-1] == (2070, 2070) and len(calls) == 2071
    # 11 photos without a face (9 profile, 2 frontal); their 35 pairs count as 'different'
    assert len(report.photos_without_face) <= 15
    ff, fp = report.protocol("FF"), report.protocol("FP")
    assert (ff.pairs, fp.pairs, ff.genuine, ff.impostor, ff.folds) == (2100, 2100, 1050, 1050, 3)
    # measured: FF accuracy 99.33%, k-fold 99.38%, AUC 0.9961, FMR 0, FNMR 1.33%
    assert ff.accuracy >= 0.985 and ff.kfold_accuracy >= 0.985 and ff.roc_auc >= 0.99
    assert ff.fmr <= 0.005 and ff.fnmr <= 0.03
    # measured: FP accuracy 90.81%, k-fold 95.43%, AUC 0.9757, FMR 0.10%, FNMR 18.3%
    assert fp.accuracy >= 0.89 and fp.kfold_accuracy >= 0.94 and fp.roc_auc >= 0.965
    assert fp.fmr <= 0.005 and fp.fnmr <= 0.22
    # overall: accuracy 95.07%, k-fold 96.90%, AUC 0.9859; FMR 0.05% (calibrated at 0.1%)
    o = report.overall
    assert o.pairs == 4200 and o.accuracy >= 0.94 and o.roc_auc >= 0.975 and o.fmr <= 0.005
    # every pair's decision is the product's: score >= threshold, no-face pairs at -1
    for r in report.results:
        assert r.match == (r.score >= report.threshold)
    no_face = set(report.photos_without_face)
    assert all(r.score == -1.0 and not r.match for r in report.results
               if r.file_x in no_face or r.file_y in no_face)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["protocols"]["FF"]["accuracy"] == pytest.approx(ff.accuracy, abs=1e-6)
    assert len(d["pairs"]) == 4200 and d["photos_without_face"] == len(no_face)


@pytest.mark.slow
def test_cli_verify_subset_matches_runner(env: Path, dev: Path, tmp_path: Path,
                                          engine: Engine) -> None:
    # compared with a runner run on the same subset, not with the `cfp` fixture: under
    # pytest-xdist this test may land on another worker, which would embed all of CFP again
    subset = _cfp_subset(dev, tmp_path / "pairs.csv")
    res = _invoke("verify", subset, "--root", dev / "cfp", "--json")
    assert res.exit_code == EXIT_OK, res.output
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert doc["photos"] == 237 and len(doc["pairs"]) == 240
    assert set(doc["protocols"]) == {"FF", "FP"}
    ref = evaluate_verify(engine, subset, dev / "cfp")
    assert [p["match"] for p in doc["pairs"]] == [r.match for r in ref.results]
    assert [p["score"] for p in doc["pairs"]] == \
        pytest.approx([r.score for r in ref.results], abs=1e-4)
    assert doc["protocols"]["FF"]["accuracy"] == pytest.approx(ref.protocol("FF").accuracy)
    assert doc["protocols"]["FF"]["accuracy"] >= 0.95  # measured 97.5% on this subset
    assert doc["protocols"]["FF"]["kfold_accuracy"] is not None
    # --strict raises the threshold; the human table names both protocols (60 pairs)
    small = _cfp_subset(dev, tmp_path / "small.csv", per_group=5)
    res = _invoke("verify", small, "--root", dev / "cfp", "--strict")
    assert res.exit_code == EXIT_OK, res.output
    assert "strict" in res.stdout and "FF" in res.stdout and "FP" in res.stdout
    assert "k-fold" in res.stdout


# -------------------------------------------------------------- detection
def test_wider_detect_floors(wider: DetectReport, settings: Settings) -> None:
    r = wider
    assert r.detector["id"] == "yunet" and r.options["score_threshold"] == 0.6
    assert r.options["tile_min_face"] == settings.det_tile_min_face  # the product default
    assert (r.faces, r.faces_min(10), r.faces_min(20)) == (176, 133, 18)
    # measured with the default tiling floor (tiles only as far as 40 px faces need, so
    # these 1024 px crowds get no tiles): recall 61.7% (>= 10 px), 61.1% (11/18, >= 20 px),
    # 46.6% (all); 86 detections, 4 false (4.7%)
    assert r.recall_min(10) >= 0.58 and r.recall_min(20) >= 0.55 and r.recall >= 0.43
    assert r.false_detections <= 7 and r.false_detection_rate <= 0.08
    for im in r.images:
        assert im.found + im.false_detections == im.detections
        assert len(set(m for m in im.matched if m >= 0)) == im.found  # one-to-one


def test_wider_detect_native_tiles(engine: Engine, dev: Path) -> None:
    """YuNet tiled to native resolution (tile_min_face=0): what the detector can find."""
    r = evaluate_detect(engine, dev / "wider/counts.json", tile_min_face=0)
    assert all(im.tiles > 0 for im in r.images)
    # measured: recall 88.7% (>= 10 px), 88.9% (16/18), 72.2% (all); 134 detections, 7 false
    assert r.recall_min(10) >= 0.85 and r.recall_min(20) >= 0.83 and r.recall >= 0.69
    assert r.false_detections <= 10 and r.false_detection_rate <= 0.08


@pytest.mark.slow
def test_wider_detect_scrfd_small_faces(wider_scrfd: DetectReport,
                                        wider: DetectReport) -> None:
    r = wider_scrfd
    assert r.detector["id"] == "scrfd_2.5g"
    assert r.options["min_face_size"] == 8 and r.options["score_threshold"] == 0.45
    # measured: recall 95.5% (>= 10 px), 94.4% (17/18), 81.8% (all); 150 detections, 6 false
    assert r.recall_min(10) >= 0.92 and r.recall_min(20) >= 0.88 and r.recall >= 0.78
    assert r.false_detections <= 9 and r.false_detection_rate <= 0.07
    assert r.recall > wider.recall  # tiles down to 8 px find more of the small faces


@pytest.mark.slow
def test_cli_detect(env: Path, dev: Path, wider: DetectReport,
                    wider_scrfd: DetectReport) -> None:
    counts = dev / "wider/counts.json"
    res = _invoke("detect", counts, "--detector", "scrfd_2.5g", "--min-face-size", "8",
                  "--score", "0.45", "--json")
    assert res.exit_code == EXIT_OK, res.output
    doc = json.loads(res.stdout)
    assert doc["detector"]["id"] == "scrfd_2.5g" and doc["root"] == str(counts.parent)
    assert doc["options"]["min_face_size"] == 8 and doc["options"]["score_threshold"] == 0.45
    assert doc["found"] == wider_scrfd.found
    assert doc["false_detections"] == wider_scrfd.false_detections
    assert doc["recall_min10px"] == pytest.approx(wider_scrfd.recall_min(10), abs=1e-6)
    assert [i["detections"] for i in doc["images"]] == \
        [i.detections for i in wider_scrfd.images]
    res = _invoke("detect", counts)  # default root: the JSON's directory; human table
    assert res.exit_code == EXIT_OK, res.output
    assert f"{100 * wider.recall_min(10):.1f}%" in res.stdout and "yunet" in res.stdout


def test_detect_progress_and_options(engine: Engine, dev: Path) -> None:
    calls: list[tuple[int, int]] = []
    r = evaluate_detect(engine, dev / "wider/counts.json", score_threshold=0.9,
                        progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(6)]
    assert r.options["score_threshold"] == 0.9
    assert all(s >= 0.9 for im in r.images for s in im.scores)
    with pytest.raises(TypeError):
        evaluate_detect(engine, dev / "wider/counts.json", score=0.9)


def test_match_detections_one_to_one() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 52, 52]], float)
    dets = np.array([[0, 0, 10, 10],  # face 0
                     [1, 0, 11, 10],  # a duplicate of face 0: false
                     [21, 0, 31, 10],  # face 1 (IoU 0.82)
                     [100, 100, 110, 110]], float)  # nothing there: false
    scores = np.array([0.9, 0.95, 0.8, 0.7])
    t_of_d, d_of_t = match_detections(truth, dets, scores)
    # the higher-scored duplicate takes face 0 first; the other one is then false
    assert t_of_d.tolist() == [-1, 0, 1, -1] and d_of_t.tolist() == [1, 2, -1]
    # a detection goes to the unmatched face it overlaps most: [4, 0, 24, 10] overlaps
    # face 0 (IoU 0.25, already taken) more than face 1 (IoU 0.154)
    t_of_d, _ = match_detections(truth[:2], np.array([[0, 0, 10, 10], [4, 0, 24, 10]], float),
                                 np.array([0.9, 0.8]), iou=0.15)
    assert t_of_d.tolist() == [0, 1]
    empty = match_detections(np.zeros((0, 4)), dets, scores)
    assert empty[0].tolist() == [-1] * 4 and empty[1].size == 0


# ---------------------------------------------------------- anti-spoofing
@pytest.mark.slow
def test_nuaa_antispoof_floors(nuaa: PadReport, engine: Engine) -> None:
    r = nuaa
    assert (r.bona_fide, r.attacks) == (180, 180)
    assert r.threshold == engine.antispoofer().threshold
    # measured: APCER 5.0% (9 prints accepted), BPCER 0.56% (1 live rejected), AUC 0.998
    assert r.apcer <= 0.08 and r.apcer_by_attack["print"] == r.apcer
    assert r.bpcer <= 0.02 and r.roc_auc >= 0.99
    assert r.no_face_live + r.no_face_attack <= 3
    for im in r.images:
        assert im.accepted == (im.face and im.live_score >= r.threshold)


@pytest.mark.slow
def test_cli_antispoof(env: Path, dev: Path, tmp_path: Path, nuaa: PadReport) -> None:
    labels = dev / "nuaa/labels.json"
    res = _invoke("antispoof", labels, "--json")
    assert res.exit_code == EXIT_OK, res.output
    doc = json.loads(res.stdout)
    assert doc["apcer"] == pytest.approx(nuaa.apcer, abs=1e-6)
    assert doc["bpcer"] == pytest.approx(nuaa.bpcer, abs=1e-6)
    assert [i["accepted"] for i in doc["images"]] == [i.accepted for i in nuaa.images]
    # the human table, on the first 10 live and 10 attack frames with an explicit --root
    images = json.loads(labels.read_text())["images"]
    few = [n for n, v in images.items() if v["live"]][:10] + \
        [n for n, v in images.items() if not v["live"]][:10]
    small = tmp_path / "labels.json"
    small.write_text(json.dumps({"images": {n: images[n] for n in few}}))
    res = _invoke("antispoof", small, "--root", labels.parent)
    assert res.exit_code == EXIT_OK, res.output
    assert "APCER" in res.stdout and "BPCER" in res.stdout


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize(("command", "content", "message"), [
    ("verify", "a,b,label\nx.jpg,y.jpg,1\n", "must name the columns file_x, file_y and same"),
    ("verify", "", "is empty"),
    ("verify", "file_x,file_y,same\nx.jpg,y.jpg,maybe\n", "line 2: same must be 1 or 0"),
    ("verify", "file_x,file_y,same,fold\nx.jpg,y.jpg,1,one\n", "fold must be an integer"),
    ("verify", "file_x,file_y,same\nx.jpg,y.jpg\n", "line 2: 2 fields"),
    ("verify", "file_x,file_y,same\n", "no pairs"),
    ("detect", "[1, 2, 3]", "must be a JSON object"),
    ("detect", '{"images": {"a.jpg": {"boxes_xywh": [[1, 2, 3]]}}}', "boxes_xywh must hold"),
    ("detect", '{"images": {"a.jpg": {"faces": 3}}}', "needs 'boxes_xywh'"),
    ("detect", '{"images": ', "is not valid JSON"),
    ("antispoof", '"live"', "must be a JSON object"),
    ("antispoof", '{"about": "no images"}', "has no 'images' object"),
    ("antispoof", '{"images": {"a.jpg": {"live": "yes"}}}', "needs 'live': true or false"),
])
def test_malformed_input_exits_3(env: Path, tmp_path: Path, command: str, content: str,
                                 message: str) -> None:
    path = tmp_path / ("labels.csv" if command == "verify" else "labels.json")
    path.write_text(content)
    res = _invoke(command, path)
    assert res.exit_code == EXIT_INPUT, res.output
    assert message in " ".join(res.stderr.split()), res.stderr  # rich may wrap long lines
    assert "invalid_input" in res.stderr and res.stdout == ""


def test_missing_files_exit_3(env: Path, tmp_path: Path, dev: Path) -> None:
    res = _invoke("detect", tmp_path / "nope.json")
    assert res.exit_code == EXIT_INPUT and "counts JSON not found" in res.stderr
    # one image listed but absent: named in the message, nothing evaluated
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("file_x,file_y,same\nimages/001/frontal/01.jpg,images/001/frontal/99.jpg,1\n")
    res = _invoke("verify", pairs, "--root", dev / "cfp")
    assert res.exit_code == EXIT_INPUT
    assert "1 image file(s)" in res.stderr and "images/001/frontal/99.jpg" in res.stderr
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"images": {"gone.jpg": {"live": True}}}))
    res = _invoke("antispoof", labels)
    assert res.exit_code == EXIT_INPUT and "gone.jpg" in res.stderr
    res = _invoke("verify", pairs, "--root", tmp_path / "no_such_dir")
    assert res.exit_code == EXIT_INPUT and "is not a directory" in res.stderr


def test_unreadable_image_and_unknown_model(env: Path, tmp_path: Path, dev: Path) -> None:
    (tmp_path / "bad.jpg").write_text("not an image")
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"images": {"bad.jpg": {"boxes_xywh": []}}}))
    res = _invoke("detect", counts)
    assert res.exit_code == EXIT_INPUT and "bad.jpg" in res.stderr
    res = _invoke("verify", dev / "cfp/pairs.csv", "--embedder", "no_such_model")
    assert res.exit_code == EXIT_MODEL and "no_such_model" in res.stderr


def test_readers_raise_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_pairs(bad)
    with pytest.raises(InvalidInput, match="is a directory"):
        read_counts(tmp_path)
    ok = tmp_path / "pairs.csv"
    ok.write_text("\ufeffFile_X, file_y ,same,protocol\na.jpg,b.jpg,1,\nc.jpg,d.jpg,false,FP\n")
    pairs = read_pairs(ok)  # BOM, case and spaces in the header are tolerated
    assert [(p.same, p.protocol, p.fold, p.line) for p in pairs] == \
        [(True, None, None, 2), (False, "FP", None, 3)]
    labels = tmp_path / "l.json"
    labels.write_text(json.dumps({"images": {"a.jpg": {"live": False},
                                             "b.jpg": {"live": True, "person": 7}}}))
    assert read_pad_labels(labels) == {"a.jpg": (False, "attack", None),
                                       "b.jpg": (True, None, "7")}


def test_eval_app_mounts(env: Path) -> None:
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    res = runner.invoke(app, ["eval", "--help"])
    assert res.exit_code == EXIT_OK
    assert all(c in res.stdout for c in ("verify", "detect", "antispoof"))
