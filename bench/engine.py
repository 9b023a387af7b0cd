"""Engine benchmark: per-stage latency, and facesocial against face_recognition.

Measures, on the labelled photos of ``../shared/testdata`` (labels.json: the
``faces`` photos, plus the liveness and deepfake photos where a stage applies):

1. per-stage milliseconds (time.perf_counter; one warm-up pass, then
   ``--repeats`` passes; median and p90 over every image x repeat): decode
   (bytes -> RGB), detect (default detector through Engine.detect), align,
   embed (default embedder, mobilefacenet, dlib_resnet), antispoof,
   demographics, deepfake, objects;
2. end to end, in the same run and interleaved image by image so both see the
   same machine load: facesocial ``Engine.analyze(path, "detect,embed")``
   (decode + detect + embed, default models) against face_recognition 1.3's
   default pipeline (``load_image_file`` + ``face_locations`` (HOG, upsample 1)
   + ``face_encodings``), the ratio of their times, face counts against the
   labels, faces face_recognition finds that facesocial does not, and 1:1
   verification errors on every pair of single-face labelled photos
   (face_recognition: euclidean distance <= 0.6; facesocial: Engine.compare at
   the embedder's calibrated default threshold);
3. (full runs only) a decode profile and prototypes of faster pipelines
   built from the engine's public pieces, without changing it: detection
   without the native-resolution tiles, tiles only for faces of 40 px and
   more, JPEG draft-mode decoding (PIL ``Image.draft``) and the mobilefacenet
   embedder - each with its time, faces and verification errors.

Usage:
    python bench/engine.py [--repeats 5] [--fr-repeats 3] [--quick]
                           [--json [OUT]] [--model-dir DIR] [--threads 2]

``--json`` without a path writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import shlex
import sys
import time
import types
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import (  # noqa: F401
    cpu_model,
    dist_version,
    fmt,
    machine_info,
    md_table,
    print_run_header,
)

from facesocial.engine import Engine
from facesocial.errors import ModelNotInstalled
from facesocial.results import Embedding
from facesocial.settings import Settings
from facesocial.vision.alignment import align_faces
from facesocial.vision.image import _to_rgb, decode_image

ENGINE_DISTS = (("facesocial", "facesocial"), ("onnxruntime", "onnxruntime"), ("numpy", "numpy"),
                ("dlib-bin", "dlib"), ("face-recognition", "face_recognition"),
                ("pillow", "PIL"), ("opencv-python-headless", "cv2"))

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("FACESOCIAL_SHARED", REPO.parent / "shared")) / "testdata"
RESULTS = REPO / "bench" / "results"
FR_TOLERANCE = 0.6  # face_recognition's standard tolerance (compare_faces default)
GOAL_RATIO = 25.0

# stage -> photo groups it runs on
STAGE_GROUPS = {
    "decode": ("faces", "liveness", "deepfake"),
    "detect": ("faces", "liveness", "deepfake"),
    "align": ("faces", "liveness", "deepfake"),
    "embed": ("faces", "liveness", "deepfake"),
    "embed mobilefacenet": ("faces",),
    "embed dlib_resnet": ("faces",),
    "antispoof": ("faces", "liveness"),
    "demographics": ("faces",),
    "deepfake": ("faces", "deepfake"),
    "objects": ("faces",),
}
FACE_STAGES = {"align", "embed", "embed mobilefacenet", "embed dlib_resnet", "antispoof",
               "demographics", "deepfake"}


# ----------------------------------------------------------------------------- helpers
def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"n": 0, "median": math.nan, "p90": math.nan, "mean": math.nan}
    return {"n": int(a.size), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "mean": float(a.mean())}


def import_face_recognition() -> tuple[Any, str]:
    """Import face_recognition; shim pkg_resources when setuptools no longer ships it.

    face_recognition_models 0.3 calls ``pkg_resources.resource_filename`` only
    to locate its .dat files; setuptools >= 81 removed pkg_resources.
    """
    note = ""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from importlib.resources import files

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda pkg, name: str(files(pkg).joinpath(name))  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
        note = ("pkg_resources missing (setuptools >= 81); face_recognition_models located "
                "through an importlib.resources shim")
    import face_recognition

    return face_recognition, note


def exif_orientation(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return int(im.getexif().get(0x0112, 1) or 1), im.size[0], im.size[1]


def orient_boxes(boxes: np.ndarray, orientation: int, w: int, h: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) in the raw (stored) frame -> the EXIF-upright frame
    that facesocial decodes to (face_recognition ignores EXIF orientation)."""
    if orientation in (1, 0) or len(boxes) == 0:
        return boxes
    x = boxes[:, [0, 2, 0, 2]].astype(np.float64)
    y = boxes[:, [1, 1, 3, 3]].astype(np.float64)
    mapping = {2: (w - x, y), 3: (w - x, h - y), 4: (x, h - y), 5: (y, x),
               6: (h - y, x), 7: (h - y, w - x), 8: (y, w - x)}
    nx, ny = mapping.get(orientation, (x, y))
    return np.stack([nx.min(1), ny.min(1), nx.max(1), ny.max(1)], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) -> (n, m) IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


def unmatched(ref_boxes: np.ndarray, boxes: np.ndarray) -> int:
    """How many ``ref_boxes`` have no box in ``boxes`` (IoU >= 0.3 or centre inside).

    HOG boxes are tighter than the ONNX detectors' boxes, hence the loose rule.
    """
    if len(ref_boxes) == 0:
        return 0
    if len(boxes) == 0:
        return len(ref_boxes)
    cx = (ref_boxes[:, 0] + ref_boxes[:, 2]) / 2
    cy = (ref_boxes[:, 1] + ref_boxes[:, 3]) / 2
    inside = ((cx[:, None] >= boxes[None, :, 0]) & (cx[:, None] <= boxes[None, :, 2])
              & (cy[:, None] >= boxes[None, :, 1]) & (cy[:, None] <= boxes[None, :, 3]))
    hit = inside | (iou(ref_boxes, boxes) >= 0.3)
    return int((~hit.any(axis=1)).sum())


def largest(boxes: np.ndarray) -> int | None:
    if len(boxes) == 0:
        return None
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


# ----------------------------------------------------------------------------- data
def load_images() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    labels = json.loads((TESTDATA / "labels.json").read_text())
    images = []
    for group in ("faces", "liveness", "deepfake"):
        for rel, lab in labels.get(group, {}).items():
            p = TESTDATA / rel
            if not p.is_file():
                continue
            orientation, w, h = exif_orientation(p)
            images.append({"rel": rel, "path": p, "group": group, "label": lab,
                           "data": p.read_bytes(), "orientation": orientation,
                           "raw_size": (w, h)})
    return images, labels


def single_face_pairs(images: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    single = [im for im in images if im["group"] == "faces"
              and im["label"].get("faces") == 1 and im["label"].get("identity")]
    return [(a["rel"], b["rel"], a["label"]["identity"] == b["label"]["identity"])
            for a, b in itertools.combinations(single, 2)]


# ----------------------------------------------------------------------------- thresholds
def threshold_for(engine: Engine, model_id: str) -> tuple[float | str | None, str]:
    """The threshold Engine.compare uses by default, or a stated stand-in."""
    spec = engine.catalog.get(model_id)
    if spec.thresholds is not None:
        return "default", f"catalog default {spec.thresholds.default:.4f}"
    cache = RESULTS / f"cfp_{model_id}.npz"
    if cache.is_file():  # same rule as bench/calibrate_verify.py: FMR 1e-3 on CFP impostors
        from facesocial.evaluation import threshold_at_fmr

        data = np.load(cache)
        keys = sorted(data.files)
        x = np.stack([data[k] for k in keys]).astype(np.float32)
        person = np.array([k.split("/")[1] for k in keys])
        iu = np.triu_indices(len(keys), 1)
        imp = (x @ x.T)[iu][person[iu[0]] != person[iu[1]]]
        t = float(threshold_at_fmr(imp, 1e-3))
        return t, f"PROVISIONAL {t:.4f} (catalog has none; FMR 1e-3 on {cache.name})"
    return None, "no calibrated threshold"


def verification(pairs: list[tuple[str, str, bool]], decide: Callable[[str, str], bool | None],
                 score: Callable[[str, str], float | None]) -> dict[str, Any]:
    fm = fnm = 0
    no_face = 0
    gen, imp = [], []
    errors = []
    for a, b, same in pairs:
        d = decide(a, b)
        s = score(a, b)
        if d is None:
            no_face += 1
            d = False  # a photo without a face cannot match
        if s is not None:
            (gen if same else imp).append(s)
        if d and not same:
            fm += 1
            errors.append(f"false match {a} ~ {b}")
        if same and not d:
            fnm += 1
            errors.append(f"false non-match {a} ~ {b}")
    return {"pairs": len(pairs), "genuine": sum(p[2] for p in pairs),
            "impostor": sum(not p[2] for p in pairs), "false_matches": fm,
            "false_non_matches": fnm, "pairs_without_face": no_face, "errors": errors,
            "genuine_scores": [min(gen, default=math.nan), max(gen, default=math.nan)],
            "impostor_scores": [min(imp, default=math.nan), max(imp, default=math.nan)]}


# ----------------------------------------------------------------------------- stages
def run_stages(engine: Engine, images: list[dict[str, Any]], repeats: int,
               embedders: dict[str, Any]) -> dict[str, Any]:
    samples: dict[str, list[float]] = defaultdict(list)
    per_face: dict[str, list[float]] = defaultdict(list)
    per_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    vectors: dict[str, dict[str, tuple[np.ndarray, Any]]] = defaultdict(dict)
    faces_found: dict[str, int] = {}
    detector = engine.detector()
    spoof, demo = engine.antispoofer(), engine.demographics()
    fake, objs = engine.deepfake(), engine.objects()
    thr_obj = engine.settings.object_score_threshold

    for r in range(repeats + 1):  # pass 0 is the warm-up
        for im in images:
            group, rel = im["group"], im["rel"]
            timings: dict[str, float] = {}
            t = time.perf_counter()
            rgb = decode_image(im["data"], engine.limits).rgb
            timings["decode"] = ms_since(t)
            t = time.perf_counter()
            dets = engine.detect(rgb)
            timings["detect"] = ms_since(t)
            n = len(dets)
            faces_found[rel] = n
            if n:
                t = time.perf_counter()
                crops = align_faces(rgb, dets.landmarks, 112)
                timings["align"] = ms_since(t)
                for stage, emb in embedders.items():
                    if group not in STAGE_GROUPS[stage]:
                        continue
                    t = time.perf_counter()
                    if hasattr(emb, "embed_crops"):  # ArcFace family: on the aligned crops
                        v = emb.embed_crops(crops)
                    else:  # dlib ResNet: its own 5-point shape and face chip
                        v = emb.embed(rgb, dets.landmarks, dets.boxes)
                    timings[stage] = ms_since(t)
                    k = largest(dets.boxes)
                    vectors[stage][rel] = (v[k], emb.model)
                if group in STAGE_GROUPS["antispoof"]:
                    t = time.perf_counter()
                    spoof.predict(rgb, dets.boxes)
                    timings["antispoof"] = ms_since(t)
                if group in STAGE_GROUPS["demographics"]:
                    t = time.perf_counter()
                    demo.predict(rgb, dets.boxes)
                    timings["demographics"] = ms_since(t)
                if group in STAGE_GROUPS["deepfake"]:
                    t = time.perf_counter()
                    fake.score_faces(rgb, dets)
                    timings["deepfake"] = ms_since(t)
            if group in STAGE_GROUPS["objects"]:
                t = time.perf_counter()
                objs.detect(rgb, thr_obj)
                timings["objects"] = ms_since(t)
            if r == 0:
                continue
            for stage, ms in timings.items():
                samples[stage].append(ms)
                per_image[stage][rel].append(ms)
                if stage in FACE_STAGES and n:
                    per_face[stage].append(ms / n)
    table = {}
    for stage in STAGE_GROUPS:
        s = stats(samples[stage])
        s["per_face_median"] = stats(per_face[stage])["median"] if stage in FACE_STAGES else None
        s["images"] = len(per_image[stage])
        table[stage] = s
    return {"stages": table, "faces_found": faces_found, "vectors": vectors,
            "detector": detector.ref.id,
            "per_image_median": {st: {k: float(np.median(v)) for k, v in d.items()}
                                 for st, d in per_image.items()}}


# ----------------------------------------------------------------------------- end to end
def run_comparison(engine: Engine, fr: Any, images: list[dict[str, Any]], fs_repeats: int,
                   fr_repeats: int, fast: Engine | None = None) -> dict[str, Any]:
    """Interleaved per image: facesocial analyze(detect,embed) (default settings, and the
    fast settings when ``fast`` is given) and face_recognition."""
    fs_ms: dict[str, list[float]] = defaultdict(list)
    fast_ms: dict[str, list[float]] = defaultdict(list)
    fr_ms: dict[str, list[float]] = defaultdict(list)
    fs_out: dict[str, Any] = {}
    fast_out: dict[str, Any] = {}
    fr_out: dict[str, Any] = {}
    for r in range(max(fs_repeats, fr_repeats) + 1):
        for im in images:
            rel, path = im["rel"], im["path"]
            if r <= fs_repeats:
                t = time.perf_counter()
                res = engine.analyze(path, "detect,embed")
                ms = ms_since(t)
                if r:
                    fs_ms[rel].append(ms)
                fs_out[rel] = res
            if fast is not None and r <= fs_repeats:
                t = time.perf_counter()
                fres = fast.analyze(path, "detect,embed")
                ms = ms_since(t)
                if r:
                    fast_ms[rel].append(ms)
                fast_out[rel] = fres
            if r <= fr_repeats:
                t = time.perf_counter()
                img = fr.load_image_file(str(path))
                locs = fr.face_locations(img)
                encs = fr.face_encodings(img, locs)
                ms = ms_since(t)
                if r:
                    fr_ms[rel].append(ms)
                fr_out[rel] = (locs, encs)
    rows = {}
    for im in images:
        rel = im["rel"]
        res = fs_out[rel]
        fs_boxes = np.array([f.box for f in res.faces], np.float64).reshape(-1, 4)
        locs, encs = fr_out[rel]
        fr_raw = np.array([[left, t, r, b] for t, r, b, left in locs], np.float64).reshape(-1, 4)
        fr_boxes = orient_boxes(fr_raw, im["orientation"], *im["raw_size"])
        k_fs, k_fr = largest(fs_boxes), largest(fr_boxes)
        rows[rel] = {
            "group": im["group"], "size": [res.width, res.height],
            "label_faces": im["label"].get("faces"),
            "facesocial_faces": len(res.faces), "face_recognition_faces": len(locs),
            "fr_faces_missed_by_facesocial": unmatched(fr_boxes, fs_boxes),
            "facesocial_ms": float(np.median(fs_ms[rel])),
            "face_recognition_ms": float(np.median(fr_ms[rel])),
            "facesocial_ms_min": float(np.min(fs_ms[rel])),
            "face_recognition_ms_min": float(np.min(fr_ms[rel])),
            "facesocial_stage_ms": {k: round(v, 2) for k, v in res.timings_ms.items()},
            "_fs_emb": res.faces[k_fs].embedding if k_fs is not None else None,
            "_fr_enc": encs[k_fr] if k_fr is not None else None,
            "_fr_boxes": fr_boxes,
        }
        rows[rel]["ratio"] = rows[rel]["face_recognition_ms"] / rows[rel]["facesocial_ms"]
        if fast is not None:
            fres = fast_out[rel]
            f_boxes = np.array([f.box for f in fres.faces], np.float64).reshape(-1, 4)
            k_fast = largest(f_boxes)
            rows[rel].update({"fast_ms": float(np.median(fast_ms[rel])),
                              "fast_faces": len(fres.faces),
                              "fast_fr_faces_missed": unmatched(fr_boxes, f_boxes),
                              "_fast_emb": fres.faces[k_fast].embedding
                              if k_fast is not None else None})
    return rows


def summarise_ratio(rows: dict[str, Any], subset: Callable[[dict[str, Any]], bool]
                    ) -> dict[str, float]:
    sel = [r for r in rows.values() if subset(r)]
    fs = sum(r["facesocial_ms"] for r in sel)
    frt = sum(r["face_recognition_ms"] for r in sel)
    ratios = [r["ratio"] for r in sel]
    fs_min = sum(r["facesocial_ms_min"] for r in sel)
    fr_min = sum(r["face_recognition_ms_min"] for r in sel)
    return {"images": len(sel), "facesocial_ms_total": fs, "face_recognition_ms_total": frt,
            "ratio_of_totals": frt / fs if fs else math.nan,
            "ratio_of_min_totals": fr_min / fs_min if fs_min else math.nan,
            "ratio_median": float(np.median(ratios)) if ratios else math.nan,
            "ratio_min": float(min(ratios)) if ratios else math.nan,
            "facesocial_ms_per_image_median": float(np.median([r["facesocial_ms"] for r in sel])),
            "face_recognition_ms_per_image_median":
                float(np.median([r["face_recognition_ms"] for r in sel]))}


# ----------------------------------------------------------------------------- prototypes
def draft_decode(data: bytes, min_long: int) -> tuple[np.ndarray, float]:
    """Prototype: JPEG decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling through
    ``Image.draft``) keeping the long side >= ``min_long``; other formats as usual.
    Returns (rgb, factor) with original px = returned px * factor."""
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    full = max(img.size)
    if img.format == "JPEG" and full > min_long:
        k = full / min_long
        img.draft("RGB", (math.ceil(img.size[0] / k), math.ceil(img.size[1] / k)))
    img.load()
    rgb = _to_rgb(ImageOps.exif_transpose(img))
    return rgb, full / max(rgb.shape[:2])


def run_prototypes(engine: Engine, images: list[dict[str, Any]], repeats: int,
                   comparison: dict[str, Any], pairs: list[tuple[str, str, bool]],
                   thr: float | str) -> dict[str, Any]:
    emb = engine.embedder()

    def pipeline(decode: Callable[[bytes], tuple[np.ndarray, float]], embedder: Any = None,
                 **det: Any) -> Callable[[dict[str, Any]], tuple[dict[str, float], Any]]:
        e = embedder or emb

        def run(im: dict[str, Any]) -> tuple[dict[str, float], Any]:
            tm = {}
            t = time.perf_counter()
            rgb, factor = decode(im["path"].read_bytes())
            tm["decode"] = ms_since(t)
            t = time.perf_counter()
            dets = engine.detect(rgb, **det)
            tm["detect"] = ms_since(t)
            t = time.perf_counter()
            vecs = e.embed(rgb, dets.landmarks, dets.boxes) if len(dets) else []
            tm["embed"] = ms_since(t)
            tm["total"] = sum(tm.values())
            return tm, (dets.boxes * factor, [Embedding(vector=v, model=e.model) for v in vecs])
        return run

    def full(data: bytes) -> tuple[np.ndarray, float]:
        return decode_image(data, engine.limits).rgb, 1.0

    variants = {
        "current (default settings)": pipeline(full),
        "no tiles (one 640 px pass)": pipeline(full, tiling=False),
        "min_face_size=40 (tiles only for faces >= 40 px)": pipeline(full, min_face_size=40),
        "draft >=640 + no tiles": pipeline(lambda d: draft_decode(d, 640), tiling=False),
    }
    own_threshold = set(variants)
    try:
        mfn = engine.embedder("mobilefacenet")
        variants["no tiles + mobilefacenet"] = pipeline(full, mfn, tiling=False)
        variants["draft >=640 + no tiles + mobilefacenet"] = pipeline(
            lambda d: draft_decode(d, 640), mfn, tiling=False)
    except ModelNotInstalled:
        pass

    def vec_model(vec: dict[str, Any]) -> str:
        return next(v.model.id for v in vec.values() if v is not None)
    ms: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in range(repeats + 1):
        for im in images:
            for name, run in variants.items():
                tm, res = run(im)
                if r:
                    ms[name][im["rel"]].append(tm)
                out[name][im["rel"]] = res
    result = {}
    for name in variants:
        totals, stage_med = [], defaultdict(list)
        lost = faces_vs_label = 0
        vec: dict[str, Any] = {}
        for im in images:
            rel = im["rel"]
            runs = ms[name][rel]
            totals.append(float(np.median([x["total"] for x in runs])))
            for st in ("decode", "detect", "embed"):
                stage_med[st].append(float(np.median([x[st] for x in runs])))
            boxes, vecs = out[name][rel]
            row = comparison[rel]
            fr_boxes = row["_fr_boxes"]
            lost += unmatched(fr_boxes, np.asarray(boxes, np.float64).reshape(-1, 4))
            lab = im["label"].get("faces")
            if lab is not None and len(boxes) != lab:
                faces_vs_label += 1
            k = largest(np.asarray(boxes).reshape(-1, 4))
            vec[rel] = vecs[k] if k is not None else None
        t_v = thr if name in own_threshold else threshold_for(engine, vec_model(vec))[0]
        if t_v is None:
            ver = {"false_matches": None, "false_non_matches": None,
                   "genuine_scores": [math.nan, math.nan], "impostor_scores": [math.nan] * 2}
        else:
            ver = verification(
                pairs,
                lambda a, b, v=vec, t=t_v: None if v[a] is None or v[b] is None
                else engine.compare(v[a], v[b], t).match,
                lambda a, b, v=vec, t=t_v: None if v[a] is None or v[b] is None
                else engine.compare(v[a], v[b], t).score)
        result[name] = {
            "ms_total": sum(totals), "ms_per_image_median": float(np.median(totals)),
            "stage_ms_total": {k: sum(v) for k, v in stage_med.items()},
            "fr_faces_lost": lost, "images_with_wrong_face_count": faces_vs_label,
            "false_matches": ver["false_matches"], "false_non_matches": ver["false_non_matches"],
            "genuine_min": ver["genuine_scores"][0], "impostor_max": ver["impostor_scores"][1],
        }
    base = result["current (default settings)"]["ms_total"]
    fr_total = sum(comparison[im["rel"]]["face_recognition_ms"] for im in images)
    fs_total = sum(comparison[im["rel"]]["facesocial_ms"] for im in images)
    for p in result.values():
        # speed-up measured in this loop (same load for every variant), applied to the
        # face_recognition / facesocial ratio measured in the interleaved comparison
        p["speedup_vs_current"] = base / p["ms_total"]
        p["projected_ratio_vs_face_recognition"] = fr_total / fs_total * p["speedup_vs_current"]
    return result


def run_detector_vs_opencv(engine: Engine, images: list[dict[str, Any]],
                           repeats: int) -> dict[str, Any]:
    """The same YuNet file, the same 640 px input: facesocial's detector against OpenCV's
    own cv2.FaceDetectorYN, interleaved per image; both at score 0.6, NMS 0.3, their default
    threads. facesocial's time is detect_faces() without tiles (pre-processing, ONNX Runtime,
    decoding, NMS); OpenCV's is setInputSize + detect (its DNN engine does the same)."""
    import cv2

    from facesocial.vision.detection import detect_faces
    from facesocial.vision.image import resize_long_side

    ours = engine.detector("yunet")
    cv = cv2.FaceDetectorYN.create(str(engine.store.path("yunet")), "", (320, 320), 0.6, 0.3,
                                   5000)
    rows = []
    for im in images:
        small, _scale = resize_long_side(engine.image(im["data"]), 640)
        small = np.ascontiguousarray(small)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        h, w = small.shape[:2]
        t_fs: list[float] = []
        t_cv: list[float] = []
        n_fs = n_cv = 0
        for r in range(repeats + 1):
            t = time.perf_counter()
            d = detect_faces(ours, small, score_threshold=0.6, nms_iou=0.3, max_side=640,
                             tiling=False)
            dt_fs = ms_since(t)
            t = time.perf_counter()
            cv.setInputSize((w, h))
            _n, faces = cv.detect(bgr)
            dt_cv = ms_since(t)
            if r:  # the first pass warms both up
                t_fs.append(dt_fs)
                t_cv.append(dt_cv)
            n_fs, n_cv = len(d), 0 if faces is None else len(faces)
        rows.append({"image": im["rel"], "input": [w, h], "facesocial_ms": float(np.median(t_fs)),
                     "opencv_ms": float(np.median(t_cv)), "facesocial_faces": n_fs,
                     "opencv_faces": n_cv, "label_faces": im["label"].get("faces")})
    fs_total = sum(r["facesocial_ms"] for r in rows)
    cv_total = sum(r["opencv_ms"] for r in rows)
    return {"rows": rows, "images": len(rows), "facesocial_ms_total": fs_total,
            "opencv_ms_total": cv_total, "ratio_facesocial_to_opencv": fs_total / cv_total,
            "opencv_version": cv2.__version__, "opencv_threads": cv2.getNumThreads()}


def decode_breakdown(images: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """Decode alone: current decode_image vs JPEG draft to a long side >= 640."""
    rows = []
    for im in images:
        if im["group"] != "faces":
            continue
        t_full, t_640 = [], []
        for r in range(repeats + 1):
            t = time.perf_counter()
            rgb = decode_image(im["data"]).rgb
            a = ms_since(t)
            t = time.perf_counter()
            r640, _ = draft_decode(im["data"], 640)
            c = ms_since(t)
            if r:
                t_full.append(a)
                t_640.append(c)
        from PIL import Image

        with Image.open(io.BytesIO(im["data"])) as pim:
            progressive = bool(pim.info.get("progressive"))
        rows.append({"image": im["rel"], "size": list(rgb.shape[1::-1]),
                     "bytes": len(im["data"]), "progressive": progressive,
                     "decode_ms": float(np.median(t_full)),
                     "draft640_size": list(r640.shape[1::-1]),
                     "draft640_ms": float(np.median(t_640))})
    return rows


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed passes after the warm-up")
    ap.add_argument("--fr-repeats", type=int, default=None,
                    help="timed passes of face_recognition (default: min(repeats, 3))")
    ap.add_argument("--quick", action="store_true",
                    help="1 timed pass, no prototypes (a smoke run; numbers are noisy)")
    ap.add_argument("--no-prototypes", action="store_true")
    ap.add_argument("--json", nargs="?", const=str(RESULTS / "engine.json"), default=None,
                    metavar="OUT", help="write machine-readable results "
                                        "(default path bench/results/engine.json)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="model home (default: $FACESOCIAL_MODEL_DIR, else /tmp/fs_home "
                         "when it exists, else the settings default)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
        args.no_prototypes = True
    fr_repeats = args.fr_repeats if args.fr_repeats is not None else min(args.repeats, 3)
    command = shlex.join([sys.executable, *sys.argv])
    fr, fr_note = import_face_recognition()  # before machine_info imports it for its version
    info = machine_info(command, ENGINE_DISTS)

    model_dir = args.model_dir or (Path(os.environ["FACESOCIAL_MODEL_DIR"])
                                   if os.environ.get("FACESOCIAL_MODEL_DIR") else
                                   Path("/tmp/fs_home") if Path("/tmp/fs_home").is_dir() else None)
    overrides: dict[str, Any] = {"intra_op_threads": args.threads}
    if model_dir:
        overrides["model_dir"] = model_dir
    engine = Engine(Settings(**overrides))
    images, _ = load_images()
    pairs = single_face_pairs(images)
    default_emb = engine.embedder()
    embedders: dict[str, Any] = {"embed": default_emb}
    for mid in ("mobilefacenet", "dlib_resnet"):
        try:
            embedders[f"embed {mid}"] = engine.embedder(mid)
        except ModelNotInstalled as exc:
            print(f"# skipping {mid}: {exc}", file=sys.stderr)

    print("# facesocial engine benchmark\n")
    print_run_header(info, command)
    print(f"- models: detector {engine.detector().ref.id}, embedder {default_emb.model.id}; "
          f"ONNX Runtime intra-op threads {args.threads}; model home {engine.settings.model_dir}")
    print(f"- images: {len(images)} ({sum(i['group'] == 'faces' for i in images)} faces/, "
          f"{sum(i['group'] == 'liveness' for i in images)} liveness/, "
          f"{sum(i['group'] == 'deepfake' for i in images)} deepfake/); "
          f"repeats {args.repeats} (+1 warm-up), face_recognition repeats {fr_repeats} (+1)")
    if fr_note:
        print(f"- note: {fr_note}")
    sys.stdout.flush()

    t_all = time.perf_counter()
    st = run_stages(engine, images, args.repeats, embedders)
    print("\n## Per-stage latency (ms; median and p90 over images x repeats)\n")
    rows = []
    for stage, s in st["stages"].items():
        if not s["n"]:
            continue
        rows.append([stage, s["images"], s["n"], fmt(s["median"], 2), fmt(s["p90"], 2),
                     fmt(s["per_face_median"], 2) if s["per_face_median"] is not None else ""])
    print(md_table(["stage", "images", "calls", "median", "p90", "median per face"], rows))
    print(f"\nStage models: detect {st['detector']}, embed {default_emb.model.id}; decode is "
          "bytes -> RGB (decode_image); align is the 5-point warp to 112x112; ArcFace embeds "
          "time the aligned crops only; dlib_resnet includes its own 5-point shape + chip.")
    sys.stdout.flush()

    det_cmp = run_detector_vs_opencv(engine, images, args.repeats)
    print("\n## YuNet: facesocial's detector vs OpenCV's FaceDetectorYN (same file)\n")
    print(f"Each image resized to a long side of 640 px once; then, interleaved, facesocial "
          f"`detect_faces(yunet, tiling off)` and OpenCV {det_cmp['opencv_version']} "
          f"`FaceDetectorYN` ({det_cmp['opencv_threads']} threads) at score 0.6, NMS 0.3; median "
          f"of {args.repeats} runs after one warm-up. Faces: found at score >= 0.6.\n")
    print(md_table(["image", "input", "fs faces", "cv faces", "fs ms", "cv ms", "fs/cv"],
                   [[r["image"], "x".join(map(str, r["input"])), r["facesocial_faces"],
                     r["opencv_faces"], fmt(r["facesocial_ms"], 2), fmt(r["opencv_ms"], 2),
                     fmt(r["facesocial_ms"] / r["opencv_ms"], 2)] for r in det_cmp["rows"]]))
    print(f"\nTotal: facesocial {det_cmp['facesocial_ms_total']:.1f} ms, OpenCV "
          f"{det_cmp['opencv_ms_total']:.1f} ms: facesocial / OpenCV = "
          f"{det_cmp['ratio_facesocial_to_opencv']:.2f}x (goal <= 1.0: "
          f"{'MET' if det_cmp['ratio_facesocial_to_opencv'] <= 1.0 else 'NOT MET'}).")
    sys.stdout.flush()

    fast_settings = {"embed_flip": False, "embed_refine_landmarks": False, "det_tiling": False}
    fast_engine = Engine(Settings(**{**overrides, **fast_settings}))
    cmp_rows = run_comparison(engine, fr, images, args.repeats, fr_repeats, fast_engine)
    print("\n## facesocial vs face_recognition: decode + detect + embed per image\n")
    print("facesocial: `Engine.analyze(path, 'detect,embed')` (default models); "
          "face_recognition 1.3.0: `load_image_file` + `face_locations` (HOG, upsample 1) + "
          "`face_encodings`. Median ms per image; faces found vs the label; "
          "'fr-only' = faces face_recognition finds that facesocial does not.\n")
    rows = []
    for rel, r in cmp_rows.items():
        rows.append([rel, f"{r['size'][0]}x{r['size'][1]}",
                     r["label_faces"] if r["label_faces"] is not None else "",
                     r["facesocial_faces"], r["face_recognition_faces"],
                     r["fr_faces_missed_by_facesocial"], fmt(r["facesocial_ms"]),
                     fmt(r["face_recognition_ms"]), fmt(r["ratio"])])
    print(md_table(["image", "size", "label", "fs faces", "fr faces", "fr-only",
                    "fs ms", "fr ms", "fr/fs"], rows))
    ratio_all = summarise_ratio(cmp_rows, lambda r: True)
    ratio_faces = summarise_ratio(cmp_rows, lambda r: r["group"] == "faces")
    lost = sum(r["fr_faces_missed_by_facesocial"] for r in cmp_rows.values())
    wrong = [k for k, r in cmp_rows.items()
             if r["label_faces"] is not None and r["facesocial_faces"] != r["label_faces"]]
    wrong_fr = [k for k, r in cmp_rows.items()
                if r["label_faces"] is not None and r["face_recognition_faces"] != r["label_faces"]]
    print(f"\nRatio face_recognition / facesocial (sum of per-image medians): "
          f"all {ratio_all['images']} images {ratio_all['ratio_of_totals']:.1f}x "
          f"({ratio_all['face_recognition_ms_total']:.0f} ms vs "
          f"{ratio_all['facesocial_ms_total']:.0f} ms); faces/ only "
          f"{ratio_faces['ratio_of_totals']:.1f}x; per-image median "
          f"{ratio_all['ratio_median']:.1f}x, worst {ratio_all['ratio_min']:.1f}x; "
          f"from each image's fastest run (least disturbed by other load) "
          f"{ratio_all['ratio_of_min_totals']:.1f}x. "
          f"Goal >= {GOAL_RATIO:.0f}x: "
          f"{'MET' if ratio_all['ratio_of_totals'] >= GOAL_RATIO else 'NOT MET'}.")
    fast_total = sum(r["fast_ms"] for r in cmp_rows.values())
    fast_ratio = ratio_all["face_recognition_ms_total"] / fast_total
    fast_wrong = [k for k, r in cmp_rows.items()
                  if r["label_faces"] is not None and r["fast_faces"] != r["label_faces"]]
    fast_lost = sum(r["fast_fr_faces_missed"] for r in cmp_rows.values())
    print(f"Fast settings ({', '.join(f'{k}={v}' for k, v in fast_settings.items())}; "
          f"FACESOCIAL_* variables of the same names): {fast_total:.0f} ms, "
          f"face_recognition / facesocial {fast_ratio:.1f}x; faces missed vs face_recognition "
          f"{fast_lost}, face count differs from the label: {len(fast_wrong)} {fast_wrong}.")
    print(f"Faces face_recognition finds that facesocial misses: {lost}. Face count differs "
          f"from the label: facesocial {len(wrong)} {wrong}, face_recognition {len(wrong_fr)} "
          f"{wrong_fr}.")

    # verification on pairs of single-face labelled photos
    thr, thr_note = threshold_for(engine, default_emb.model.id)
    fs_vec = {k: r["_fs_emb"] for k, r in cmp_rows.items()}
    fr_vec = {k: r["_fr_enc"] for k, r in cmp_rows.items()}

    def fr_dist(a: str, b: str) -> float | None:
        if fr_vec[a] is None or fr_vec[b] is None:
            return None
        return float(fr.face_distance([fr_vec[a]], fr_vec[b])[0])

    ver_fr = verification(pairs, lambda a, b: None if fr_dist(a, b) is None
                          else fr_dist(a, b) <= FR_TOLERANCE, fr_dist)
    ver = {"face_recognition (dlib, euclidean <= 0.6)": ver_fr}
    fast_vec = {k: r["_fast_emb"] for k, r in cmp_rows.items()}

    def fast_decide(a: str, b: str) -> bool | None:
        if fast_vec.get(a) is None or fast_vec.get(b) is None:
            return None
        return engine.compare(fast_vec[a], fast_vec[b], thr if thr is not None
                              else "default").match

    def fast_score(a: str, b: str) -> float | None:
        if fast_vec.get(a) is None or fast_vec.get(b) is None:
            return None
        return engine.compare(fast_vec[a], fast_vec[b], "default").score

    ver_fast = verification(pairs, fast_decide, fast_score)
    thr_notes = {}
    for stage, emb in embedders.items():
        mid = emb.model.id
        t_m, note = threshold_for(engine, mid)
        thr_notes[mid] = note
        if t_m is None:
            continue
        if stage == "embed":
            vecs = fs_vec  # from the end-to-end analyze() results
        else:
            vecs = {k: Embedding(vector=v, model=ref)
                    for k, (v, ref) in st["vectors"][stage].items()}

        def score(a: str, b: str, v: dict[str, Any] = vecs, t: Any = t_m) -> float | None:
            if v.get(a) is None or v.get(b) is None:
                return None
            return engine.compare(v[a], v[b], t).score

        def decide(a: str, b: str, v: dict[str, Any] = vecs, t: Any = t_m) -> bool | None:
            if v.get(a) is None or v.get(b) is None:
                return None
            return engine.compare(v[a], v[b], t).match

        ver[f"facesocial {mid} (cosine, {note})"] = verification(pairs, decide, score)
    fast_name = f"facesocial {default_emb.model.id}, fast settings"
    ver[f"{fast_name} (cosine, {thr_notes.get(default_emb.model.id, '')})"] = ver_fast
    print(f"\n## Verification on the {len(pairs)} pairs of single-face labelled photos "
          f"({ver_fr['genuine']} same identity, {ver_fr['impostor']} different)\n")
    rows = []
    for name, v in ver.items():
        rows.append([name, v["false_matches"], v["false_non_matches"], v["pairs_without_face"],
                     f"{fmt(v['genuine_scores'][0], 3)}..{fmt(v['genuine_scores'][1], 3)}",
                     f"{fmt(v['impostor_scores'][0], 3)}..{fmt(v['impostor_scores'][1], 3)}"])
    print(md_table(["pipeline (threshold)", "false matches", "false non-matches",
                    "pairs with a no-face photo", "same-identity scores",
                    "different-identity scores"], rows))
    for name, v in ver.items():
        for e in v["errors"]:
            print(f"- {name}: {e}")
    sys.stdout.flush()

    proto = decode_rows = None
    if not args.no_prototypes:
        p_rep = min(args.repeats, 3)
        decode_rows = decode_breakdown(images, p_rep)
        print("\n## Profile: decode alone, current vs JPEG draft mode (median ms)\n")
        print(md_table(["image", "size", "progressive", "decode_image", "draft >=640 size",
                        "draft ms"],
                       [[d["image"], "x".join(map(str, d["size"])),
                         "yes" if d["progressive"] else "", fmt(d["decode_ms"]),
                         "x".join(map(str, d["draft640_size"])), fmt(d["draft640_ms"])]
                        for d in decode_rows]))
        tot = {k: sum(d[k] for d in decode_rows) for k in ("decode_ms", "draft640_ms")}
        print(f"\nTotal over faces/: decode_image {tot['decode_ms']:.0f} ms, JPEG draft to a "
              f"long side >= 640 {tot['draft640_ms']:.0f} ms (draft only reduces by 1/2, 1/4, "
              "1/8, so only photos with a long side >= 1280 px shrink)")
        proto = run_prototypes(engine, images, p_rep, cmp_rows, pairs, thr if thr else "default")
        print(f"\n## Prototypes: decode + detect + embed, all {len(images)} images "
              f"(median per image, summed; {p_rep} repeats)\n")
        rows = []
        for name, p in proto.items():
            s = p["stage_ms_total"]
            rows.append([name, fmt(p["ms_total"], 0), fmt(s["decode"], 0), fmt(s["detect"], 0),
                         fmt(s["embed"], 0), fmt(p["speedup_vs_current"], 2),
                         fmt(p["projected_ratio_vs_face_recognition"]),
                         p["fr_faces_lost"], p["images_with_wrong_face_count"],
                         p["false_matches"], p["false_non_matches"],
                         fmt(p["genuine_min"], 3), fmt(p["impostor_max"], 3)])
        print(md_table(["variant", "total ms", "decode", "detect", "embed (incl. align)",
                        "speed-up", "projected fr/fs",
                        "fr faces lost", "images wrong count", "false matches",
                        "false non-matches", "min same", "max different"], rows))
        print("\n(speed-up: against 'current' in this same loop; projected fr/fs: the "
              "comparison's ratio of totals x speed-up. Errors and lost faces use the same "
              "rules as above, each embedder at its own catalog threshold.)")

    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - t_all
    print(f"\nWall time {info['wall_s']:.0f} s; load average at end "
          f"{', '.join(f'{x:.2f}' for x in info['loadavg_end'])}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_rows = {k: {kk: vv for kk, vv in r.items() if not kk.startswith("_")}
                      for k, r in cmp_rows.items()}
        doc = {"machine": info, "settings": {"repeats": args.repeats, "fr_repeats": fr_repeats,
                                             "threads": args.threads,
                                             "detector": st["detector"],
                                             "embedder": default_emb.model.id,
                                             "thresholds": thr_notes},
               "stages_ms": st["stages"], "stages_per_image_median_ms": st["per_image_median"],
               "comparison": {"per_image": clean_rows, "ratio_all": ratio_all,
                              "ratio_faces": ratio_faces, "goal_ratio": GOAL_RATIO,
                              "fr_faces_missed_by_facesocial": lost,
                              "facesocial_wrong_counts": wrong,
                              "face_recognition_wrong_counts": wrong_fr},
               "verification": ver, "decode_profile": decode_rows, "prototypes": proto,
               "detector_vs_opencv": det_cmp,
               "fast_profile": {"settings": fast_settings, "ms_total": fast_total,
                                "ratio": fast_ratio, "faces_wrong": fast_wrong,
                                "fr_faces_missed": fast_lost, "verification": ver_fast}}
        out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
