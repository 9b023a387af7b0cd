"""Accuracy report on the dev sets: writes ACCURACY.md.

Sections (each states its protocol and the command that reproduces it):

1. 1:1 verification on the CFP dev pairs (dev/cfp/pairs.csv: FF and FP protocols,
   3 person-disjoint folds, 350 genuine + 350 impostor pairs per fold and protocol)
   for every installed embedding model (product default w600k_mbf_folded + YuNet,
   then w600k_mbf_int8, mobilefacenet, dlib_resnet): accuracy at the product
   threshold, k-fold accuracy (threshold chosen on the other folds), ROC AUC,
   FMR / FNMR; side by side with the "straightforward pipeline" reference quoted
   from labels.json (dev_sets) and with face_recognition 1.3 (HOG detector,
   upsample 1, largest face, its 128-d encodings, euclidean distance, tolerance
   0.6, and k-fold accuracy on the negated distance) on the same pairs: all three
   folds by default (about 0.35 s per photo, ~12 min for the 2,070 photos on 2
   shared cores, cached and resumable); ``--fr-folds 1`` restricts both pipelines
   to the pairs of fold 1 (687 photos), a deterministic subset.
2. Verification accuracy by quality band (vision/quality.QUALITY_BANDS) of the
   lower-quality face of each pair (assess_faces on the largest face of the
   default detector, the face that is embedded).
3. Calibrated thresholds per embedding model (catalog.json), with FMR and FNMR
   recomputed from the cached embeddings over ALL impostor / genuine pairs of
   the 2,070 CFP dev photos.
4. Detection on WIDER dev (evaluate_detect): default settings and the crowd
   configuration (scrfd_2.5g, min_face_size 8, score 0.45).
5. Anti-spoofing on NUAA dev (evaluate_antispoof): APCER / BPCER at the product
   threshold, ROC AUC.
6. Targets and what is still weak.

Embeddings come from bench/results/cfp_<model>.npz (bench/calibrate_verify.py:
largest face of the default detector; a photo missing from the file had no face).
Other caches (git-ignored; delete one to recompute it):
  bench/results/accrep_fr_cfp.npz          face_recognition encodings per CFP photo
  bench/results/accrep_quality_cfp.json    quality score of the embedded face per photo
  bench/results/accrep_detect_<cfg>.json   evaluate_detect summaries
  bench/results/accrep_nuaa.json           evaluate_antispoof summary

Usage:
  python bench/accuracy.py [--quick] [--out ACCURACY.md] [--fr-folds 1 2 3]
                           [--model-dir /tmp/fs_home] [--step fr|quality|detect|pad]
``--quick`` skips face_recognition (uses its cache if present, else leaves it out).
``--step`` only fills one cache and exits.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from facesocial.evaluation import (  # noqa: E402
    best_threshold,
    fmr_at,
    fnmr_at,
    kfold_accuracy,
    roc_auc,
    threshold_at_bpcer,
    threshold_at_fmr,
)

SHARED = REPO.parent / "shared" / "testdata"
DEV = SHARED / "dev"
CFP = DEV / "cfp"
WIDER = DEV / "wider"
NUAA = DEV / "nuaa"
LABELS = SHARED / "labels.json"
RESULTS = REPO / "bench" / "results"
CATALOG = REPO / "src" / "facesocial" / "models" / "catalog.json"
MODELS = ["w600k_mbf_folded", "w600k_mbf_int8", "mobilefacenet", "dlib_resnet"]
DEFAULT_MODEL = "w600k_mbf_folded"
FR_TOLERANCE = 0.6
CROWD = {"detector": "scrfd_2.5g", "min_face_size": 8, "score_threshold": 0.45}


# ------------------------------------------------------------------ helpers
def pct(x: float | None, nd: int = 2) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.{nd}f}%"


def num(x: float | None, nd: int = 4) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def read_pairs() -> list[dict[str, Any]]:
    with open(CFP / "pairs.csv", newline="") as fh:
        return [{"x": r["file_x"], "y": r["file_y"], "same": r["same"] == "1",
                 "protocol": r["protocol"], "fold": int(r["fold"])} for r in csv.DictReader(fh)]


def make_engine(model_dir: Path) -> Any:
    from facesocial.engine import Engine
    from facesocial.settings import Settings

    return Engine(Settings(model_dir=model_dir, intra_op_threads=1))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------- face_recognition
def import_face_recognition() -> Any:
    """face_recognition_models needs pkg_resources.resource_filename only; setuptools
    >= 81 dropped pkg_resources, so shim it (as bench/engine.py does)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from importlib.resources import files

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, name: str(files(pkg).joinpath(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def fr_files(pairs: list[dict[str, Any]], folds: list[int]) -> list[str]:
    return sorted({f for p in pairs if p["fold"] in folds for f in (p["x"], p["y"])})


def fr_encode(files: list[str]) -> tuple[dict[str, np.ndarray | None], dict[str, Any]]:
    """face_recognition's default pipeline per photo, cached (resumable) in
    accrep_fr_cfp.npz: load_image_file, face_locations(HOG, upsample 1), largest
    box, face_encodings(num_jitters=1, model 'small'). None = no face found."""
    cache = RESULTS / "accrep_fr_cfp.npz"
    enc: dict[str, np.ndarray | None] = {}
    seconds: dict[str, float] = {}
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        meta = json.loads(str(data["__meta__"]))
        for f in meta["done"]:
            enc[f] = data[f] if f in data.files else None
        seconds = meta["seconds"]
    todo = [f for f in files if f not in enc]
    if todo:
        fr = import_face_recognition()
        t0 = time.perf_counter()
        for i, f in enumerate(todo, 1):
            t = time.perf_counter()
            img = fr.load_image_file(str(CFP / f))
            locs = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
            if locs:
                areas = [(bot - top) * (rgt - lft) for top, rgt, bot, lft in locs]
                loc = locs[int(np.argmax(areas))]
                enc[f] = np.asarray(fr.face_encodings(img, known_face_locations=[loc])[0],
                                    np.float64)
            else:
                enc[f] = None
            seconds[f] = time.perf_counter() - t
            if i % 50 == 0 or i == len(todo):
                log(f"  face_recognition: {i}/{len(todo)} ({time.perf_counter() - t0:.0f} s)")
                _save_fr(cache, enc, seconds)
    stats = {"photos": len(files), "no_face": sum(enc[f] is None for f in files),
             "no_face_profile": sum(enc[f] is None and "/profile/" in f for f in files),
             "profile": sum("/profile/" in f for f in files),
             "s_per_photo_median": float(np.median([seconds[f] for f in files])),
             "seconds_total": float(sum(seconds[f] for f in files))}
    return {f: enc[f] for f in files}, stats


def _save_fr(cache: Path, enc: dict[str, np.ndarray | None], seconds: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    arrays = {f: v for f, v in enc.items() if v is not None}
    meta = json.dumps({"done": list(enc), "seconds": seconds})
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, __meta__=np.array(meta), **arrays)
    tmp.replace(cache)


# ------------------------------------------------------------------ caches
def quality_scores(engine: Any, files: list[str]) -> dict[str, float | None]:
    """assess_faces score of the largest face of the default detector (the embedded
    face) per CFP photo; None = no face. Cached in accrep_quality_cfp.json."""
    from facesocial.vision.quality import assess_faces

    cache = RESULTS / "accrep_quality_cfp.json"
    out: dict[str, float | None] = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [f for f in files if f not in out]
    t0 = time.perf_counter()
    for i, f in enumerate(todo, 1):
        rgb = engine.image(CFP / f)
        dets = engine.detect(rgb)
        if len(dets) == 0:
            out[f] = None
        else:
            b = dets.boxes
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            [q] = assess_faces(rgb, b[[k]], dets.landmarks[[k]])
            out[f] = round(float(q.score), 5)
        if i % 200 == 0 or i == len(todo):
            log(f"  quality: {i}/{len(todo)} ({time.perf_counter() - t0:.0f} s)")
            RESULTS.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(out))
    return {f: out[f] for f in files}


def detect_summary(engine: Any, name: str, **options: Any) -> dict[str, Any]:
    from facesocial.evaluate import evaluate_detect

    cache = RESULTS / f"accrep_detect_{name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rep = evaluate_detect(engine, WIDER / "counts.json", WIDER, **options)
    d = rep.to_dict()
    d.pop("images")
    d["per_image"] = [{k: v for k, v in i.to_dict().items()
                       if k not in ("boxes", "scores", "matched")} for i in rep.images]
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(d, indent=1))
    return d


def pad_summary(engine: Any) -> dict[str, Any]:
    from facesocial.evaluate import evaluate_antispoof

    cache = RESULTS / "accrep_nuaa.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    rep = evaluate_antispoof(engine, NUAA / "labels.json", NUAA)
    d = rep.to_dict()
    imgs = d.pop("images")
    # the error rates at other thresholds, for the targets section
    scores = np.array([-1.0 if i["live_score"] is None else i["live_score"] for i in imgs])
    live = np.array([i["live"] for i in imgs], bool)
    people = sorted({i["person"] for i in imgs})
    d["live_scores"] = scores.tolist()
    d["is_live"] = live.tolist()
    d["person"] = [i["person"] for i in imgs]
    d["people"] = people
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(d))
    return d


# ------------------------------------------------------------- verification
def load_embeddings(model: str) -> dict[str, np.ndarray] | None:
    path = RESULTS / f"cfp_{model}.npz"
    if not path.is_file():
        return None
    data = np.load(path)
    return {k: data[k].astype(np.float64) for k in data.files}


def pair_scores(emb: dict[str, np.ndarray], pairs: list[dict[str, Any]]) -> np.ndarray:
    """Cosine per pair, -1 when a photo had no face (evaluate.NO_FACE_SCORE)."""
    return np.array([float(emb[p["x"]] @ emb[p["y"]]) if p["x"] in emb and p["y"] in emb
                     else -1.0 for p in pairs])


def fr_pair_scores(enc: dict[str, np.ndarray | None], pairs: list[dict[str, Any]]
                   ) -> np.ndarray:
    """Negated euclidean distance (higher = more alike), -inf-like when no face."""
    out = []
    for p in pairs:
        a, b = enc.get(p["x"]), enc.get(p["y"])
        out.append(-float(np.linalg.norm(a - b)) if a is not None and b is not None else -99.0)
    return np.array(out)


def metrics(scores: np.ndarray, pairs: list[dict[str, Any]], thr: float) -> dict[str, Any]:
    same = np.array([p["same"] for p in pairs], bool)
    folds = np.array([p["fold"] for p in pairs])
    match = scores >= thr
    d = {"pairs": len(pairs), "genuine": int(same.sum()), "impostor": int((~same).sum()),
         "no_face_pairs": int((scores <= -1.0).sum()),
         "accuracy": float((match == same).mean()), "fmr": fmr_at(scores[~same], thr),
         "fnmr": fnmr_at(scores[same], thr), "auc": roc_auc(scores, same),
         "kfold": None, "kfold_std": None, "folds": int(len(np.unique(folds)))}
    if len(np.unique(folds)) >= 2:
        d["kfold"], d["kfold_std"] = kfold_accuracy(scores, same, folds)
    t = best_threshold(scores, same)  # in-sample: fitted on the very pairs it scores
    d["best_acc"], d["best_thr"] = float(((scores >= t) == same).mean()), t
    return d


def by_protocol(scores: np.ndarray, pairs: list[dict[str, Any]], thr: float
                ) -> dict[str, dict[str, Any]]:
    out = {}
    for proto in ("FF", "FP"):
        sel = np.array([p["protocol"] == proto for p in pairs])
        out[proto] = metrics(scores[sel], [p for p, s in zip(pairs, sel, strict=True) if s], thr)
    return out


def fold_of_pairs_accuracy(scores: np.ndarray, pairs: list[dict[str, Any]],
                           test_fold: int, all_scores: np.ndarray,
                           all_pairs: list[dict[str, Any]]) -> float:
    """Accuracy on ``test_fold`` with the best threshold of the other folds (the
    k-fold figure restricted to one fold)."""
    train = np.array([p["fold"] != test_fold for p in all_pairs])
    same_all = np.array([p["same"] for p in all_pairs], bool)
    t = best_threshold(all_scores[train], same_all[train])
    same = np.array([p["same"] for p in pairs], bool)
    return float(((scores >= t) == same).mean())


def all_pairs_rates(emb: dict[str, np.ndarray], files: list[str], thr: dict[str, float]
                    ) -> dict[str, Any]:
    """FMR / FNMR over ALL pairs of the CFP dev photos (the calibration population)."""
    keys = [f for f in files if f in emb]
    X = np.stack([emb[k] for k in keys]).astype(np.float32)
    P = np.array([k.split("/")[1] for k in keys])
    iu = np.triu_indices(len(keys), 1)
    S = (X @ X.T)[iu]
    same = P[iu[0]] == P[iu[1]]
    imp, gen = S[~same], S[same]
    prof = np.array(["/profile/" in k for k in keys])
    fp_gen = gen[(prof[iu[0]] != prof[iu[1]])[same]]
    d = {"photos": len(keys), "photos_total": len(files), "impostor": int(len(imp)),
         "genuine": int(len(gen)), "recalibrated_1e-3": threshold_at_fmr(imp, 1e-3),
         "recalibrated_1e-4": threshold_at_fmr(imp, 1e-4)}
    for name, t in thr.items():
        d[name] = {"threshold": t, "fmr": fmr_at(imp, t), "fnmr": fnmr_at(gen, t),
                   "fnmr_frontal_profile": fnmr_at(fp_gen, t),
                   "false_matches": int((imp >= t).sum())}
    return d


# ------------------------------------------------------------------- report
def quote(text: str) -> str:
    return "> " + text.replace("\n", " ")


def section_verify(pairs, models, thresholds, fr_enc, fr_stats, fr_folds, labels, cmd):
    out = ["## 1. Verification on the CFP dev pairs", "",
           "Protocol: `dev/cfp/pairs.csv`, 4,200 pairs: FF (frontal-frontal) and FP "
           "(frontal-profile), 3 person-disjoint folds of 50 people, 350 genuine + 350 "
           "impostor pairs per fold and protocol. Each photo is embedded once (largest face "
           "of the default detector, YuNet at score 0.6, 5-point alignment); the score is the "
           "cosine of the two embeddings; a pair with a photo without a face scores -1 "
           "('different'), as `facesocial eval verify` does. Accuracy at the product "
           "threshold (catalog `default`, FMR 1e-3), k-fold accuracy (each fold's threshold "
           "chosen on the other two folds; mean +- std over folds), ROC AUC, and FMR / FNMR of "
           "the protocol's pairs at the product threshold. Embeddings: "
           "`bench/results/cfp_<model>.npz` (bench/calibrate_verify.py), identical to what "
           "`Engine.embed_largest` returns.", "",
           f"Reproduce: `{cmd}` (or, per model, `facesocial eval verify "
           f"../shared/testdata/dev/cfp/pairs.csv --embedder <model>`).", ""]
    rows = []
    results = {}
    for model in models:
        emb = models[model]
        sc = pair_scores(emb, pairs)
        results[model] = sc
        thr = thresholds[model]["default"]
        for proto, m in by_protocol(sc, pairs, thr).items():
            rows.append([f"`{model}`" + (" (default)" if model == DEFAULT_MODEL else ""),
                         proto, num(thr), m["no_face_pairs"], pct(m["accuracy"]),
                         f"{pct(m['kfold'])} +- {pct(m['kfold_std'])}", num(m["auc"]),
                         pct(m["fmr"]), pct(m["fnmr"])])
    out.append(md_table(["embedder", "protocol", "threshold", "pairs w/o face",
                         "acc @ threshold", "3-fold acc", "ROC AUC", "FMR", "FNMR"], rows))
    out += ["", "Reference, the \"straightforward pipeline\" (labels.json `dev_sets`, "
            "quoted):", "", quote(labels["dev_sets"]["dev/cfp/"]["reference"]), ""]
    # face_recognition on the same pairs (subset = the folds it was run on)
    if fr_enc is not None:
        sub = [p for p in pairs if p["fold"] in fr_folds]
        sel = np.array([p["fold"] in fr_folds for p in pairs])
        scope = ("all 4,200 pairs (folds 1-3)" if len(fr_folds) == 3 else
                 f"the pairs of fold(s) {', '.join(map(str, fr_folds))} only "
                 f"({len(sub)} pairs, {fr_stats['photos']} photos): a deterministic subset, "
                 "because face_recognition on every photo is too slow here")
        out += ["### face_recognition 1.3 on the same pairs", "",
                f"Scope: {scope}. face_recognition's own pipeline: `load_image_file`, "
                "`face_locations` (HOG, upsample 1), the largest box, `face_encodings` "
                "(dlib ResNet 128-d, 5-point landmarks, 1 jitter); match when the euclidean "
                f"distance <= {FR_TOLERANCE} (its `compare_faces` tolerance); k-fold on the "
                "negated distance; a photo without a face makes its pairs 'different'. "
                f"HOG found no face in {fr_stats['no_face']} of {fr_stats['photos']} photos, "
                f"{fr_stats['no_face_profile']} of them among the {fr_stats['profile']} profile "
                "photos (dlib's HOG detector is trained on frontal faces; "
                f"median {fr_stats['s_per_photo_median']:.2f} s per photo here). facesocial "
                "rows are restricted to the same pairs.", ""]
        frs = fr_pair_scores(fr_enc, sub)
        rows = []
        for proto, m in by_protocol(frs, sub, -FR_TOLERANCE).items():
            kf = (f"{pct(m['kfold'])} +- {pct(m['kfold_std'])}" if m["kfold"] is not None
                  else f"{pct(m['best_acc'])} (in-sample best thr)")
            rows.append(["face_recognition (HOG + dlib 128-d)", proto, f"dist <= {FR_TOLERANCE}",
                         m["no_face_pairs"], pct(m["accuracy"]), kf, num(m["auc"]),
                         pct(m["fmr"]), pct(m["fnmr"])])
        for model in models:
            sc = results[model][sel]
            for proto, m in by_protocol(sc, sub, thresholds[model]["default"]).items():
                kf = (f"{pct(m['kfold'])} +- {pct(m['kfold_std'])}" if m["kfold"] is not None
                      else f"{pct(m['best_acc'])} (in-sample best thr)")
                rows.append([f"facesocial `{model}` + YuNet", proto,
                             num(thresholds[model]["default"]), m["no_face_pairs"],
                             pct(m["accuracy"]), kf, num(m["auc"]), pct(m["fmr"]),
                             pct(m["fnmr"])])
        out.append(md_table(["pipeline", "protocol", "threshold", "pairs w/o face",
                             "acc @ threshold", "k-fold acc", "ROC AUC", "FMR", "FNMR"], rows))
        out.append("")
    else:
        out += ["face_recognition: not run (`--quick` and no cache).", ""]
    return "\n".join(out), results


def section_quality(pairs, scores, qual, thr, cmd):
    from facesocial.vision.quality import QUALITY_BANDS

    same = np.array([p["same"] for p in pairs], bool)
    low = np.array([min(0.0 if qual[p["x"]] is None else qual[p["x"]],
                        0.0 if qual[p["y"]] is None else qual[p["y"]]) for p in pairs])
    proto = np.array([p["protocol"] for p in pairs])
    folds = np.array([p["fold"] for p in pairs])
    rows = []
    for lo, hi, n_ref, acc_ref in QUALITY_BANDS:
        sel = (low >= lo) & ((low < hi) if hi < 1.0 else (low <= hi))
        acc = ((scores[sel] >= thr) == same[sel]).mean() if sel.any() else float("nan")
        per_fold = [((scores[sel & (folds == f)] >= thr) == same[sel & (folds == f)]).mean()
                    for f in (1, 2, 3) if (sel & (folds == f)).any()]
        rows.append([f"{lo:.1f}-{hi:.1f}", int(sel.sum()), int((sel & (proto == "FF")).sum()),
                     int((sel & (proto == "FP")).sum()), int((sel & same).sum()),
                     int((sel & ~same).sum()), pct(acc),
                     " / ".join(pct(a, 1) for a in per_fold), n_ref, pct(acc_ref)])
    return "\n".join([
        "## 2. Verification accuracy by quality band", "",
        "Protocol: every CFP dev pair, scored with the default model (`w600k_mbf_folded`) at "
        f"its product threshold {thr:.4f}, grouped by the LOWER quality score of its two faces "
        "(`vision.quality.assess_faces` on the largest face of the default detector, i.e. the "
        "face that is embedded). A photo without a face scores quality 0 (and its pairs count "
        "as 'different'). Bands are `vision.quality.QUALITY_BANDS` ([low, high), the last "
        "closed); the last two columns are the figures recorded there.", "",
        f"Reproduce: `{cmd}` (cache: bench/results/accrep_quality_cfp.json).", "",
        md_table(["lower quality", "pairs", "FF", "FP", "genuine", "impostor",
                  "acc @ threshold", "fold 1 / 2 / 3", "QUALITY_BANDS pairs",
                  "QUALITY_BANDS acc"], rows), ""])


def section_thresholds(models, catalog, files, cmd):
    rows, notes = [], []
    for model in models:
        entry = next(m for m in catalog["models"] if m["id"] == model)
        t = entry["thresholds"]
        r = all_pairs_rates(models[model], files, {"default": t["default"],
                                                   "strict": t["strict"]})
        d, s = r["default"], r["strict"]
        rows.append([f"`{model}`", num(t["default"]), f"{t['default_fmr']:g}",
                     f"{pct(d['fmr'], 3)} ({d['false_matches']})", pct(d["fnmr"], 1),
                     pct(d["fnmr_frontal_profile"], 1), num(t["strict"]), f"{t['strict_fmr']:g}",
                     f"{pct(s['fmr'], 4)} ({s['false_matches']})", pct(s["fnmr"], 1),
                     pct(s["fnmr_frontal_profile"], 1),
                     f"{r['recalibrated_1e-3']:.4f} / {r['recalibrated_1e-4']:.4f}"])
        notes.append(f"- `{model}`: {r['photos']} of {r['photos_total']} photos with a face; "
                     f"{r['impostor']:,} impostor and {r['genuine']:,} genuine pairs. Catalog: "
                     f"\"{t['calibration']}\"")
    return "\n".join([
        "## 3. Calibrated verification thresholds", "",
        "How they were calibrated (bench/calibrate_verify.py): the largest face of every CFP "
        "dev photo (150 people x 14 photos) is embedded; ALL pairs of photos of different "
        "people (about 2.1 million impostor pairs) give the impostor score distribution; "
        "`default` is the smallest cosine with FMR <= 1e-3 on it, `strict` the one with FMR "
        "<= 1e-4, and `fmr_curve` lets `verify` estimate the FMR of any score. Below, FMR and "
        "FNMR are recomputed here from the cached embeddings over all impostor pairs and all "
        "genuine pairs (FP genuine = the genuine frontal-profile pairs); the false-match counts "
        "are in brackets; the last column re-derives the two thresholds from the same "
        "impostor pairs (equal to the catalog's: the FMR figures are in-sample, the "
        "thresholds were fitted on exactly these pairs).", "",
        f"Reproduce: `{cmd}`; re-calibrate with `python bench/calibrate_verify.py [--write]`.",
        "",
        md_table(["model", "default", "target FMR", "FMR (false matches)", "FNMR", "FNMR FP",
                  "strict", "target FMR", "FMR (false matches)", "FNMR", "FNMR FP",
                  "recomputed 1e-3 / 1e-4"], rows), "", *notes, ""])


def section_detect(default, crowd, labels, cmd):
    rows = []
    for name, d in (("default settings", default), ("crowd configuration", crowd)):
        o = d["options"]
        rows.append([name, f"`{d['detector']['id']}`",
                     f"score {o['score_threshold']}, min_face_size {o['min_face_size']}, "
                     f"max_side {o['max_side']}, tile_min_face {o['tile_min_face']}",
                     f"{pct(d['recall_min10px'], 1)} of {d['faces_min10px']}",
                     f"{pct(d['recall_min20px'], 1)} of {d['faces_min20px']}",
                     f"{pct(d['recall_all'], 1)} of {d['faces']}", d["detections"],
                     f"{d['false_detections']} ({pct(d['false_detection_rate'], 1)})",
                     f"{d['ms_per_image']:.0f}"])
    per = []
    for a, b in zip(default["per_image"], crowd["per_image"], strict=True):
        per.append([a["file"], f"{a['width']}x{a['height']}", a["faces"], a["faces_min10px"],
                    f"{a['found_min10px']} / {a['false_detections']}",
                    f"{b['found_min10px']} / {b['false_detections']}"])
    return "\n".join([
        "## 4. Detection on WIDER dev", "",
        "Protocol: `dev/wider/counts.json` (5 crowded WIDER FACE validation photos, official "
        "boxes), `facesocial.evaluate.evaluate_detect`: detections matched one-to-one to "
        "annotated faces at IoU >= 0.5, greedily by score, over ALL annotated faces; recall for "
        "faces whose box short side is >= 10 px, >= 20 px, and all; a false detection matches "
        "no annotated face (a duplicate counts as false); false-detection rate = false / all "
        "detections. Crowd configuration = `--detector scrfd_2.5g --min-face-size 8 --score "
        "0.45`.", "",
        f"Reproduce: `{cmd}`, or `facesocial eval detect ../shared/testdata/dev/wider/"
        "counts.json` and `facesocial eval detect ../shared/testdata/dev/wider/counts.json "
        "--detector scrfd_2.5g --min-face-size 8 --score 0.45`.", "",
        md_table(["configuration", "detector", "options", "recall >= 10 px", "recall >= 20 px",
                  "recall all", "detections", "false detections", "ms / image"], rows), "",
        md_table(["image", "size", "faces", "faces >= 10 px", "default: found >=10 / false",
                  "crowd: found >=10 / false"], per), "",
        "Reference, the straightforward pipeline (labels.json `dev_sets`, quoted):", "",
        quote(labels["dev_sets"]["dev/wider/"]["reference"]), ""])


def held_out_pad(d: dict[str, Any]) -> dict[str, Any]:
    """Threshold at BPCER <= 1% chosen on 4 NUAA people, applied to the other 2 (three
    disjoint splits; every frame tested once); pooled held-out APCER / BPCER."""
    s, live = np.array(d["live_scores"]), np.array(d["is_live"], bool)
    person = np.array(d["person"])
    people = d["people"]
    acc_att = acc_bona = n_att = n_bona = 0
    thrs = []
    for k in range(0, len(people), 2):
        test = np.isin(person, people[k:k + 2])
        t = threshold_at_bpcer(s[~test], live[~test], 0.01)
        thrs.append(t)
        acc_att += int((s[test & ~live] >= t).sum())
        n_att += int((test & ~live).sum())
        acc_bona += int((s[test & live] < t).sum())
        n_bona += int((test & live).sum())
    return {"apcer": acc_att / n_att, "bpcer": acc_bona / n_bona, "thresholds": thrs}


def section_pad(d, held, labels, cmd):
    rows = [[", ".join(f"`{m['id']}`" for m in d["models"]), f"`{d['detector']['id']}`",
             num(d["threshold"]), d["bona_fide"], d["attacks"], pct(d["apcer"], 1),
             pct(d["bpcer"], 1), num(d["roc_auc"]), f"{d['no_face_live']} / "
             f"{d['no_face_attack']}", f"{d['ms_per_image']:.0f}"]]
    return "\n".join([
        "## 5. Anti-spoofing on NUAA dev", "",
        "Protocol: `dev/nuaa/labels.json` (6 people, 180 live webcam frames, 180 frames of "
        "printed photos), `facesocial.evaluate.evaluate_antispoof`: the largest face of the "
        "default detector, the product anti-spoofer at its catalog threshold; APCER = attacks "
        "accepted as live (worst attack type; here only 'print'), BPCER = live frames rejected "
        "(a frame with no face is rejected), ROC AUC of the live score.", "",
        f"Reproduce: `{cmd}`, or `facesocial eval antispoof ../shared/testdata/dev/nuaa/"
        "labels.json`.", "",
        md_table(["models", "detector", "threshold", "bona fide", "attacks", "APCER", "BPCER",
                  "ROC AUC", "no face (live / attack)", "ms / image"], rows), "",
        "The threshold was calibrated on these same 360 frames (BPCER <= 1%, "
        "bench/calibrate_antispoof.py), so the row above is in-sample. Held-out estimate, "
        "leaving people out: the threshold for BPCER <= 1% chosen on 4 people and applied to "
        "the other 2 (3 disjoint splits, thresholds "
        f"{', '.join(f'{t:.4f}' for t in held['thresholds'])}): pooled APCER "
        f"{pct(held['apcer'], 1)}, BPCER {pct(held['bpcer'], 1)}.", "",
        "Reference, the straightforward pipeline (labels.json `dev_sets`, quoted):", "",
        quote(labels["dev_sets"]["dev/nuaa/"]["reference"]), ""])


def section_targets(ver, det_default, det_crowd, pad, held, thr_default):
    ff, fp = ver["FF"], ver["FP"]

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    fd_def, fd_crowd = det_default["false_detection_rate"], det_crowd["false_detection_rate"]
    r_def, r_crowd = det_default["recall_min10px"], det_crowd["recall_min10px"]
    rows = [
        ["CFP FP 10-fold accuracy >= 96% (default models, CPU)",
         f"{pct(fp['kfold'])} (3-fold, dev)", met(fp["kfold"] >= 0.96),
         f"{100 * (fp['kfold'] - 0.96):+.2f} pt"],
        ["CFP FF 10-fold accuracy >= 99.5%", f"{pct(ff['kfold'])} (3-fold, dev)",
         met(ff["kfold"] >= 0.995), f"{100 * (ff['kfold'] - 0.995):+.2f} pt"],
        ["WIDER recall >= 95% (>= 10 px) with < 5% false detections, default settings",
         f"{pct(r_def, 1)}, {pct(fd_def, 1)} false", met(r_def >= 0.95 and fd_def < 0.05),
         f"recall {100 * (r_def - 0.95):+.1f} pt, false {100 * (fd_def - 0.05):+.1f} pt"],
        ["same, crowd configuration (scrfd_2.5g, min 8 px, score 0.45)",
         f"{pct(r_crowd, 1)}, {pct(fd_crowd, 1)} false",
         met(r_crowd >= 0.95 and fd_crowd < 0.05),
         f"recall {100 * (r_crowd - 0.95):+.1f} pt, false {100 * (fd_crowd - 0.05):+.1f} pt"],
        ["NUAA APCER <= 1% at BPCER <= 1% (product threshold, in-sample)",
         f"APCER {pct(pad['apcer'], 1)}, BPCER {pct(pad['bpcer'], 1)}",
         met(pad["apcer"] <= 0.01 and pad["bpcer"] <= 0.01),
         f"APCER {100 * (pad['apcer'] - 0.01):+.1f} pt"],
        ["same, threshold chosen on other people (held-out estimate)",
         f"APCER {pct(held['apcer'], 1)}, BPCER {pct(held['bpcer'], 1)}",
         met(held["apcer"] <= 0.01 and held["bpcer"] <= 0.01),
         f"APCER {100 * (held['apcer'] - 0.01):+.1f} pt, BPCER "
         f"{100 * (held['bpcer'] - 0.01):+.1f} pt"],
    ]
    return rows, [ff, fp]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip face_recognition")
    ap.add_argument("--out", type=Path, default=REPO / "ACCURACY.md")
    ap.add_argument("--fr-folds", type=int, nargs="+", default=[1, 2, 3],
                    help="CFP folds whose pairs face_recognition is run on (default: all 3)")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/fs_home"))
    ap.add_argument("--step", choices=["fr", "quality", "detect", "pad"])
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    folds = sorted(set(args.fr_folds))
    cmd = "python bench/accuracy.py" + (" --quick" if args.quick else "") + (
        f" --fr-folds {' '.join(map(str, folds))}" if folds != [1, 2, 3] else "")
    pairs = read_pairs()
    files = sorted({f for p in pairs for f in (p["x"], p["y"])})
    all_files = sorted(str(p.relative_to(CFP)) for p in (CFP / "images").rglob("*.jpg"))
    labels = json.loads(LABELS.read_text())
    catalog = json.loads(CATALOG.read_text())
    engine = make_engine(args.model_dir)
    if args.step == "fr":
        fr_encode(fr_files(pairs, folds))
        return 0
    if args.step == "quality":
        quality_scores(engine, files)
        return 0
    if args.step == "detect":
        detect_summary(engine, "default")
        detect_summary(engine, "crowd", **CROWD)
        return 0
    if args.step == "pad":
        pad_summary(engine)
        return 0

    timings = {}
    t = time.perf_counter()
    models = {}
    for m in MODELS:
        emb = load_embeddings(m)
        if emb is None:
            log(f"  {m}: no cached embeddings (run bench/calibrate_verify.py --models {m})")
            continue
        if not engine.installed(m):
            log(f"  {m}: cached embeddings present but model not installed; reported anyway")
        models[m] = emb
    thresholds = {m: next(e for e in catalog["models"] if e["id"] == m)["thresholds"]
                  for m in models}
    fr_enc = fr_stats = None
    fr_cache = RESULTS / "accrep_fr_cfp.npz"
    if not args.quick or fr_cache.is_file():
        fr_list = fr_files(pairs, folds)
        if args.quick:  # cached photos only; never compute
            data = np.load(fr_cache)
            done = set(json.loads(str(data["__meta__"]))["done"])
            if not set(fr_list) <= done:
                fr_list = None
        if fr_list is not None:
            t_fr = time.perf_counter()
            fr_enc, fr_stats = fr_encode(fr_list)
            timings["face_recognition"] = time.perf_counter() - t_fr
    sec1, scores = section_verify(pairs, models, thresholds, fr_enc, fr_stats, folds, labels,
                                  cmd)
    timings["verification"] = time.perf_counter() - t
    t = time.perf_counter()
    qual = quality_scores(engine, files)
    thr_def = thresholds[DEFAULT_MODEL]["default"]
    sec2 = section_quality(pairs, scores[DEFAULT_MODEL], qual, thr_def, cmd)
    timings["quality"] = time.perf_counter() - t
    t = time.perf_counter()
    sec3 = section_thresholds(models, catalog, all_files, cmd)
    timings["thresholds"] = time.perf_counter() - t
    t = time.perf_counter()
    det_default = detect_summary(engine, "default")
    det_crowd = detect_summary(engine, "crowd", **CROWD)
    sec4 = section_detect(det_default, det_crowd, labels, cmd)
    timings["detection"] = time.perf_counter() - t
    t = time.perf_counter()
    pad = pad_summary(engine)
    held = held_out_pad(pad)
    sec5 = section_pad(pad, held, labels, cmd)
    timings["antispoof"] = time.perf_counter() - t

    ver = by_protocol(scores[DEFAULT_MODEL], pairs, thr_def)
    target_rows, _ = section_targets(ver, det_default, det_crowd, pad, held, thr_def)
    fr_line = ""
    if fr_enc is not None:
        sub = [p for p in pairs if p["fold"] in folds]
        sel = np.array([p["fold"] in folds for p in pairs])
        frm = by_protocol(fr_pair_scores(fr_enc, sub), sub, -FR_TOLERANCE)
        fsm = by_protocol(scores[DEFAULT_MODEL][sel], sub, thr_def)
        key = "kfold" if len(folds) >= 2 else "best_acc"
        fr_line = (f"| face_recognition vs facesocial, CFP folds {', '.join(map(str, folds))} "
                   f"({len(sub)} pairs) | FF {pct(frm['FF']['accuracy'])} vs "
                   f"{pct(fsm['FF']['accuracy'])} at threshold; FP {pct(frm['FP']['accuracy'])} "
                   f"vs {pct(fsm['FP']['accuracy'])} | "
                   f"{'k-fold' if key == 'kfold' else 'best-threshold (in-sample)'}: FF "
                   f"{pct(frm['FF'][key])} vs {pct(fsm['FF'][key])}; FP {pct(frm['FP'][key])} "
                   f"vs {pct(fsm['FP'][key])} |")
    summary = [
        "| task (dev set) | figure | detail |", "|---|---|---|",
        f"| CFP verification, default `w600k_mbf_folded` + YuNet | FF 3-fold "
        f"{pct(ver['FF']['kfold'])}, FP 3-fold {pct(ver['FP']['kfold'])} | at the product "
        f"threshold {thr_def:.4f}: FF {pct(ver['FF']['accuracy'])}, FP "
        f"{pct(ver['FP']['accuracy'])}; AUC FF {num(ver['FF']['auc'])}, FP "
        f"{num(ver['FP']['auc'])} |",
    ]
    if fr_line:
        summary.append(fr_line)
    summary += [
        f"| WIDER detection, default | recall >= 10 px {pct(det_default['recall_min10px'], 1)} "
        f"| {det_default['false_detections']} false of {det_default['detections']} "
        f"({pct(det_default['false_detection_rate'], 1)}); >= 20 px "
        f"{pct(det_default['recall_min20px'], 1)}; all {pct(det_default['recall_all'], 1)} |",
        f"| WIDER detection, crowd config | recall >= 10 px "
        f"{pct(det_crowd['recall_min10px'], 1)} | {det_crowd['false_detections']} false of "
        f"{det_crowd['detections']} ({pct(det_crowd['false_detection_rate'], 1)}); >= 20 px "
        f"{pct(det_crowd['recall_min20px'], 1)}; all {pct(det_crowd['recall_all'], 1)} |",
        f"| NUAA anti-spoofing | APCER {pct(pad['apcer'], 1)}, BPCER {pct(pad['bpcer'], 1)} "
        f"(in-sample threshold {pad['threshold']:.4f}) | AUC {num(pad['roc_auc'])}; held-out "
        f"people: APCER {pct(held['apcer'], 1)}, BPCER {pct(held['bpcer'], 1)} |",
    ]
    total = time.perf_counter() - t_start
    head = [
        "# Accuracy on the development sets", "",
        "Generated by `bench/accuracy.py` (do not edit by hand). All figures are on the dev "
        "sets under `../shared/testdata/dev/`; the held-out check sets are not available here. "
        "Thresholds (verification, anti-spoofing) were calibrated on these same dev sets, so "
        "FMR, BPCER and accuracy at the product threshold are in-sample; the k-fold accuracies "
        "choose their threshold on other, person-disjoint folds and are the fairer figures. "
        "CPU only (ONNX Runtime, 1 intra-op thread).", "",
        f"Reproduce everything: `{cmd}` (`--quick` skips face_recognition; caches in "
        "bench/results/). This run took "
        f"{total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}) on top of "
        "its caches, whose computation took: "
        + (f"face_recognition {fr_stats['seconds_total']:.0f} s, " if fr_stats else "")
        + f"WIDER detection {det_default['seconds'] + det_crowd['seconds']:.0f} s, NUAA "
        f"anti-spoofing {pad['seconds']:.0f} s (CFP embeddings: bench/calibrate_verify.py).",
        "",
        "## Summary", "", *summary, ""]
    t6 = ["## 6. Targets and what is still weak", "",
          md_table(["target", "measured (dev)", "status", "margin"], target_rows), "",
          *weak_notes(ver, det_default, det_crowd, pad, held, scores, pairs, qual, thr_def), ""]
    text = "\n".join(head + [sec1, sec2, sec3, sec4, sec5] + t6)
    args.out.write_text(text)
    log(f"wrote {args.out} in {total:.0f} s")
    return 0


def weak_notes(ver, det_default, det_crowd, pad, held, scores, pairs, qual, thr) -> list[str]:
    s = scores[DEFAULT_MODEL]
    same = np.array([p["same"] for p in pairs], bool)
    proto = np.array([p["protocol"] for p in pairs])
    folds = np.array([p["fold"] for p in pairs])
    low = np.array([min(0.0 if qual[p["x"]] is None else qual[p["x"]],
                        0.0 if qual[p["y"]] is None else qual[p["y"]]) for p in pairs])
    # k-fold errors (threshold from the other folds), per protocol
    err = np.zeros(len(pairs), bool)
    for pr in ("FF", "FP"):
        for f in (1, 2, 3):
            test = (proto == pr) & (folds == f)
            train = (proto == pr) & (folds != f)
            t = best_threshold(s[train], same[train])
            err[test] = (s[test] >= t) != same[test]
    fp, ff = proto == "FP", proto == "FF"
    fp_err, ff_err = int((err & fp).sum()), int((err & ff).sum())
    fp_err_gen = int((err & fp & same).sum())
    fp_err_lowq = int((err & fp & (low < 0.6)).sum())
    ff_err_gen = int((err & ff & same).sum())
    noface_fp = int(((s <= -1) & fp).sum())
    noface_ff = int(((s <= -1) & ff).sum())
    need_fp = int(np.ceil((0.96 - ver["FP"]["kfold"]) * fp.sum()))
    need_ff = int(np.ceil((0.995 - ver["FF"]["kfold"]) * ff.sum()))
    d, c = det_default, det_crowd
    n10 = d["faces_min10px"]
    miss_d = n10 - round(d["recall_min10px"] * n10)
    miss_c = n10 - round(c["recall_min10px"] * n10)
    return [
        "Why, and what is weak:", "",
        f"- **Profile verification (CFP FP)** is the main gap: {fp_err} of {int(fp.sum())} FP "
        f"pairs are wrong at the k-fold thresholds ({fp_err_gen} of them genuine pairs "
        f"rejected; {fp_err_lowq} have a face of quality < 0.6; {noface_fp} FP pairs have a "
        f"photo in which YuNet found no face); reaching 96% needs about {max(need_fp, 0)} "
        "fewer errors. The default embedder is a small MobileFaceNet-class model "
        "(w600k_mbf); frontal-to-profile similarity is its weak spot (section 2: accuracy "
        "falls steeply with the lower face quality, which is dominated by yaw), and at the "
        "product threshold (FMR 1e-3 over all CFP impostor pairs) profile genuine pairs "
        "are rejected far more often than frontal ones (section 3, 'FNMR FP').",
        f"- **CFP FF**: {ff_err} of {int(ff.sum())} FF pairs wrong at the k-fold thresholds "
        f"({ff_err_gen} genuine rejected, {noface_ff} pairs without a face); the target needs "
        f"about {max(need_ff, 0)} fewer. With 2,100 pairs one pair is 0.05 pt, so FF is "
        "within a handful of pairs of the target either way.",
        "- **Protocol caveat**: the targets name the official 10-fold CFP protocol (500 "
        "people); the dev set holds folds 1-3 only (150 people, 3-fold, ~1/3 of the pairs), "
        "so the dev figures have a standard error of roughly 0.4 pt (FP) and 0.15 pt (FF); "
        "the 3-fold accuracy does not tune on test people, but everything else (model choice, "
        "quality bands, the product threshold) was chosen looking at this dev set.",
        f"- **WIDER detection** (5 photos, {d['faces']} faces, {n10} of them >= 10 px: one "
        f"face is {100 / n10:.1f} pt of recall). Default settings find "
        f"{pct(d['recall_min10px'], 1)} of the faces >= 10 px ({miss_d} missed, "
        f"{d['false_detections']} false): the full-image pass runs at a long side of "
        f"{d['options']['max_side']} px and, with min_face_size 0, tiles only as far as faces "
        f"of {d['options']['tile_min_face']} px need (the setting aims at what "
        "face_recognition's default finds, for speed), so a 10-40 px face in these ~1024 px "
        f"crowd photos is only looked for at {d['options']['max_side']} / 1024 of its size, "
        "where most are too small for YuNet; this is below even the "
        "straightforward reference (91.7% at a long side of 1024). The crowd configuration "
        f"finds {pct(c['recall_min10px'], 1)} ({miss_c} missed, {c['false_detections']} false, "
        f"{pct(c['false_detection_rate'], 1)}) but costs {c['ms_per_image'] / 1000:.1f} s per "
        f"photo here against {d['ms_per_image'] / 1000:.2f} s. The crowd target is therefore "
        + ("met only with the crowd configuration, not with the defaults"
           if c['recall_min10px'] >= 0.95 and c['false_detection_rate'] < 0.05
           and not (d['recall_min10px'] >= 0.95 and d['false_detection_rate'] < 0.05)
           else "as in the table")
        + f"; with {n10} faces the margin ({100 * (c['recall_min10px'] - 0.95):+.1f} pt) is "
        f"{(c['recall_min10px'] - 0.95) * n10:+.1f} faces, and this dev set is the only "
        "WIDER data here, so it is not a held-out result. Some 'false' detections may be "
        "real faces the annotation left out (not checked).",
        f"- **NUAA anti-spoofing**: at the catalog threshold {pad['threshold']:.4f} "
        f"APCER {pct(pad['apcer'], 1)} and BPCER {pct(pad['bpcer'], 1)}, but that threshold "
        "was fitted on these 360 frames (BPCER <= 1% = at most 1 of 180 live frames "
        f"rejected), so it is in-sample. Choosing it on other people gives APCER "
        f"{pct(held['apcer'], 1)} / BPCER {pct(held['bpcer'], 1)}: the target is not "
        "demonstrated out of sample. 6 people, one webcam and one attack type (prints) is "
        "far too little to claim a 1% error rate (a 95% upper bound for 0 errors in 180 "
        "frames is ~1.7%).",
        "- **In-sample calibration**: the verification thresholds (FMR 1e-3 / 1e-4) and the "
        "anti-spoofing threshold were calibrated on exactly the dev data reported here, so "
        "the FMR in section 3 and the BPCER in section 5 equal their targets by construction; "
        "the kept-aside check sets (other people, other photos) are not available in this "
        "workspace, so no held-out FMR/BPCER can be given.",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
