"""Accuracy of the product on labelled sets: 1:1 verification, detection, anti-spoofing.

Each runner reads a labelled set, runs the :class:`~facesocial.engine.Engine`
exactly as the product does (same models, options and thresholds) and returns
a frozen report whose ``to_dict()`` is plain JSON-ready Python. The metrics
themselves are the pure functions of :mod:`facesocial.evaluation`.

- :func:`evaluate_verify`: pairs of photos (CSV ``file_x,file_y,same`` and
  optionally ``protocol,fold``). Every photo is embedded once (largest face);
  a photo with no face gives its pairs the score -1, i.e. 'different'.
- :func:`evaluate_detect`: annotated face boxes (JSON ``images -> boxes_xywh``).
  Detections are matched one-to-one to annotated faces at IoU >= 0.5, greedily
  by detection score (:func:`~facesocial.evaluation.match_detections`).
- :func:`evaluate_antispoof`: live / attack labels (JSON ``images -> {live,
  attack}``). APCER and BPCER (ISO/IEC 30107-3) at the engine's threshold; an
  image with no face is rejected (a live one counts against BPCER).

Input problems (missing or malformed files, missing images) raise
:class:`~facesocial.errors.InvalidInput` with a message that names the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesocial.errors import InvalidInput, NoFaceFound
from facesocial.evaluation import (
    fmr_at,
    fnmr_at,
    kfold_accuracy,
    match_detections,
    pad_rates,
    roc_auc,
)
from facesocial.vision.boxes import short_sides

__all__ = [
    "Progress", "PairSpec", "PairResult", "VerifyMetrics", "VerifyReport", "ImageDetections",
    "DetectReport", "PadImage", "PadReport", "read_pairs", "read_counts", "read_pad_labels",
    "evaluate_verify", "evaluate_detect", "evaluate_antispoof", "MATCH_IOU", "NO_FACE_SCORE",
]

Progress = Callable[[int, int], None]  # (done, total)

MATCH_IOU = 0.5
NO_FACE_SCORE = -1.0  # a pair with a photo without a face: below any cosine threshold
SIZE_BANDS = (10, 20)  # recall is reported for faces with a short side >= each (px)


# ------------------------------------------------------------------ helpers
def _num(x: float | None, nd: int = 6) -> float | None:
    """JSON-safe float: NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput(f"{what} not found: {path}", path=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{what} {path} is a directory, not a file", path=str(path)) from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {path} is not UTF-8 text", path=str(path)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror or exc}",
                           path=str(path)) from None


def _read_json_images(path: Path, what: str) -> dict[str, Any]:
    """The ``images`` object of a labels JSON file: {relative path: entry object}."""
    text = _read_text(path, what)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}", path=str(path)) from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} {path} must be a JSON object with an 'images' object, "
                           f"not a JSON {type(doc).__name__}", path=str(path))
    images = doc.get("images")
    if not isinstance(images, dict):
        raise InvalidInput(f"{what} {path} has no 'images' object (image path -> labels)",
                           path=str(path))
    if not images:
        raise InvalidInput(f"{what} {path} lists no images", path=str(path))
    for name, entry in images.items():
        if not isinstance(entry, dict):
            raise InvalidInput(f"{what} {path}: images['{name}'] must be an object, not "
                               f"{type(entry).__name__}", path=str(path), image=name)
    return images


def _root(root: Path | None, labels_file: Path) -> Path:
    root = Path(labels_file).parent if root is None else Path(root)
    if not root.is_dir():
        raise InvalidInput(f"image root {root} is not a directory", root=str(root))
    return root


def _check_images(root: Path, names: Iterable[str], labels_file: Path) -> None:
    """Fail before any work when images listed in ``labels_file`` are missing."""
    missing = [n for n in dict.fromkeys(names) if not (root / n).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise InvalidInput(f"{len(missing)} image file(s) listed in {labels_file} not found "
                           f"under {root}: {shown}", missing=missing[:20], root=str(root))


def _load(engine: Any, path: Path, name: str) -> np.ndarray:
    """Decoded RGB, with the image's name in any error."""
    try:
        return engine.image(path)
    except InvalidInput as exc:
        raise type(exc)(f"{name}: {exc.message}", **exc.details) from None


def _detect_options(settings: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The options :meth:`Engine.detect` passes to ``detect_faces``: each override, else
    the setting named ``det_<option>`` or ``<option>`` (the engine's convention), else
    ``detect_faces``'s own default. Unknown options raise TypeError."""
    import inspect

    from facesocial.vision.detection import detect_faces

    params = {n: p.default for n, p in inspect.signature(detect_faces).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(overrides) - set(params)
    if unknown:
        raise TypeError(f"unknown detection options: {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(params)})")
    options = {}
    for name, default in params.items():
        if overrides.get(name) is not None:
            options[name] = overrides[name]
        elif hasattr(settings, f"det_{name}"):
            options[name] = getattr(settings, f"det_{name}")
        else:
            options[name] = getattr(settings, name, default)
    return options


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _largest(boxes: np.ndarray) -> int:
    a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(a))


# ============================================================== verification
@dataclass(frozen=True, slots=True)
class PairSpec:
    """One labelled pair from the CSV (``line`` is its line in the file)."""

    file_x: str
    file_y: str
    same: bool
    protocol: str | None = None
    fold: int | None = None
    line: int = 0


_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "n", "f"}


def read_pairs(path: Path) -> tuple[PairSpec, ...]:
    """Pairs from a CSV with header ``file_x,file_y,same`` (+ optional ``protocol,fold``).

    ``same`` is 1/0 (also true/false, yes/no); ``fold`` an integer. Raises
    :class:`InvalidInput` naming the file and line for anything else.
    """
    path = Path(path)
    text = _read_text(path, "pairs CSV")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InvalidInput(f"pairs CSV {path} is not valid CSV: {exc}", path=str(path)) from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise InvalidInput(f"pairs CSV {path} is empty; expected a header line "
                           f"'file_x,file_y,same[,protocol,fold]'", path=str(path))
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in ("file_x", "file_y", "same") if c not in header]
    if missing:
        raise InvalidInput(f"pairs CSV {path}: the header must name the columns file_x, file_y "
                           f"and same (optionally protocol, fold); missing {', '.join(missing)} "
                           f"in header {','.join(rows[0])!r}", path=str(path), missing=missing)
    col = {name: header.index(name) for name in ("file_x", "file_y", "same", "protocol", "fold")
           if name in header}
    pairs: list[PairSpec] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InvalidInput(f"pairs CSV {path} line {line}: {len(row)} fields, the header has "
                               f"{len(header)}", path=str(path), line=line)
        cell = {name: row[i].strip() for name, i in col.items()}
        if not cell["file_x"] or not cell["file_y"]:
            raise InvalidInput(f"pairs CSV {path} line {line}: empty file_x or file_y",
                               path=str(path), line=line)
        same = cell["same"].lower()
        if same not in _TRUE | _FALSE:
            raise InvalidInput(f"pairs CSV {path} line {line}: same must be 1 or 0, got "
                               f"{cell['same']!r}", path=str(path), line=line)
        fold = None
        if "fold" in cell:
            try:
                fold = int(cell["fold"])
            except ValueError:
                raise InvalidInput(f"pairs CSV {path} line {line}: fold must be an integer, got "
                                   f"{cell['fold']!r}", path=str(path), line=line) from None
        pairs.append(PairSpec(cell["file_x"], cell["file_y"], same in _TRUE,
                              cell.get("protocol") or None, fold, line))
    if not pairs:
        raise InvalidInput(f"pairs CSV {path} has a header but no pairs", path=str(path))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class PairResult:
    """One scored pair: cosine ``score`` (-1 if a photo had no face) and the decision."""

    file_x: str
    file_y: str
    same: bool
    protocol: str | None
    fold: int | None
    score: float
    match: bool

    @property
    def correct(self) -> bool:
        return self.match == self.same

    def to_dict(self) -> dict[str, Any]:
        return {"file_x": self.file_x, "file_y": self.file_y, "same": self.same,
                "protocol": self.protocol, "fold": self.fold, "score": _num(self.score),
                "match": self.match, "correct": self.correct}


@dataclass(frozen=True, slots=True)
class VerifyMetrics:
    """Metrics over one group of pairs (one protocol, or all of them)."""

    name: str  # protocol name, or "all"
    pairs: int
    genuine: int  # same-person pairs
    impostor: int  # different-person pairs
    pairs_without_face: int  # pairs with a photo in which no face was found
    accuracy: float  # at the product threshold
    fmr: float  # impostor pairs accepted at the product threshold
    fnmr: float  # genuine pairs rejected at the product threshold
    roc_auc: float
    kfold_accuracy: float | None  # threshold chosen on the other folds (None: < 2 folds)
    kfold_std: float | None
    folds: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pairs": self.pairs, "genuine": self.genuine,
                "impostor": self.impostor, "pairs_without_face": self.pairs_without_face,
                "accuracy": _num(self.accuracy), "fmr": _num(self.fmr), "fnmr": _num(self.fnmr),
                "roc_auc": _num(self.roc_auc), "kfold_accuracy": _num(self.kfold_accuracy),
                "kfold_std": _num(self.kfold_std), "folds": self.folds}


def _verify_metrics(name: str, rows: list[PairResult], threshold: float) -> VerifyMetrics:
    scores = np.array([r.score for r in rows], np.float64)
    same = np.array([r.same for r in rows], bool)
    match = np.array([r.match for r in rows], bool)
    folds = [r.fold for r in rows]
    kacc = kstd = None
    distinct = {f for f in folds if f is not None}
    if None not in folds and len(distinct) >= 2:
        kacc, kstd = kfold_accuracy(scores, same, np.array(folds))
    return VerifyMetrics(
        name=name, pairs=len(rows), genuine=int(same.sum()), impostor=int((~same).sum()),
        pairs_without_face=int((scores == NO_FACE_SCORE).sum()),
        accuracy=float((match == same).mean()), fmr=fmr_at(scores[~same], threshold),
        fnmr=fnmr_at(scores[same], threshold), roc_auc=roc_auc(scores, same),
        kfold_accuracy=kacc, kfold_std=kstd, folds=len(distinct))


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """1:1 verification on a set of labelled pairs."""

    pairs_csv: str
    root: str
    embedder: dict[str, str]  # ModelRef.to_dict() of the embedding model
    detector: dict[str, str]
    threshold: float
    threshold_name: str  # "default", "strict" or "custom"
    photos: int  # distinct photos embedded
    photos_without_face: tuple[str, ...]
    overall: VerifyMetrics
    protocols: tuple[VerifyMetrics, ...]  # one per protocol, in order of first appearance
    results: tuple[PairResult, ...]  # every pair, in file order
    seconds: float

    def protocol(self, name: str) -> VerifyMetrics:
        for m in self.protocols:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "verify", "pairs_csv": self.pairs_csv, "root": self.root,
                "embedder": self.embedder, "detector": self.detector,
                "threshold": _num(self.threshold), "threshold_name": self.threshold_name,
                "photos": self.photos, "photos_without_face": len(self.photos_without_face),
                "files_without_face": list(self.photos_without_face),
                "overall": self.overall.to_dict(),
                "protocols": {m.name: m.to_dict() for m in self.protocols},
                "seconds": _num(self.seconds, 2),
                "ms_per_photo": _num(1000 * self.seconds / max(self.photos, 1), 2),
                "pairs": [r.to_dict() for r in self.results]}


def evaluate_verify(engine: Any, pairs_csv: Path, root: Path | None = None, *,
                    embedder: str | None = None, threshold: str | float = "default",
                    progress: Progress | None = None) -> VerifyReport:
    """1:1 verification accuracy on labelled pairs, as ``facesocial verify`` decides.

    ``root``: directory the CSV's paths are relative to (default: the CSV's).
    ``threshold``: "default", "strict" or a number (cosine). Every distinct
    photo is embedded once (largest face, default detector); a pair with a
    photo without a face scores -1 and so counts as 'different'.
    """
    pairs_csv = Path(pairs_csv)
    specs = read_pairs(pairs_csv)
    root = _root(root, pairs_csv)
    files = list(dict.fromkeys(f for p in specs for f in (p.file_x, p.file_y)))
    _check_images(root, files, pairs_csv)
    spec = engine.resolve("face_embedding", embedder or engine.settings.embedder)
    thr, thr_name = engine.threshold(spec, threshold)
    det = engine.resolve("face_detection", engine.settings.detector)
    start = time.perf_counter()
    cache: dict[str, Any] = {}
    _tick(progress, 0, len(files))
    for i, name in enumerate(files, start=1):
        rgb = _load(engine, root / name, name)
        try:
            cache[name] = engine.embed_largest(rgb, embedder=spec.id)
        except NoFaceFound:
            cache[name] = None
        _tick(progress, i, len(files))
    results = []
    for p in specs:
        a, b = cache[p.file_x], cache[p.file_y]
        if a is None or b is None:
            score, match = NO_FACE_SCORE, False
        else:
            v = engine.compare(a, b, thr)
            score, match = v.score, bool(v.match)
        results.append(PairResult(p.file_x, p.file_y, p.same, p.protocol, p.fold, score, match))
    seconds = time.perf_counter() - start
    protocols = list(dict.fromkeys(r.protocol for r in results if r.protocol is not None))
    per_protocol = tuple(_verify_metrics(name, [r for r in results if r.protocol == name], thr)
                         for name in protocols)
    ref = next((e.model for e in cache.values() if e is not None), None)
    return VerifyReport(
        pairs_csv=str(pairs_csv), root=str(root),
        embedder=ref.to_dict() if ref is not None else {"id": spec.id, "version": spec.version},
        detector={"id": det.id, "version": det.version}, threshold=thr, threshold_name=thr_name,
        photos=len(files), photos_without_face=tuple(f for f in files if cache[f] is None),
        overall=_verify_metrics("all", results, thr), protocols=per_protocol,
        results=tuple(results), seconds=seconds)


# ================================================================= detection
def read_counts(path: Path) -> dict[str, np.ndarray]:
    """Annotated face boxes per image from a counts JSON, as xyxy float arrays.

    Format: ``{"images": {"rel/path.jpg": {"boxes_xywh": [[x, y, w, h], ...]}}}``
    (other keys are ignored).
    """
    path = Path(path)
    images = _read_json_images(path, "counts JSON")
    out: dict[str, np.ndarray] = {}
    for name, entry in images.items():
        boxes = entry.get("boxes_xywh")
        where = f"counts JSON {path}: images['{name}']"
        if not isinstance(boxes, list):
            raise InvalidInput(f"{where} needs 'boxes_xywh', a list of [x, y, w, h] boxes",
                               path=str(path), image=name)
        ok = all(isinstance(b, list) and len(b) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in b) and b[2] >= 0 and b[3] >= 0 for b in boxes)
        if not ok:
            raise InvalidInput(f"{where}.boxes_xywh must hold [x, y, w, h] lists of 4 finite "
                               f"numbers with w, h >= 0", path=str(path), image=name)
        xywh = np.asarray(boxes, np.float64).reshape(-1, 4)
        out[name] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return out


@dataclass(frozen=True, slots=True)
class ImageDetections:
    """Detection on one annotated image."""

    file: str
    width: int
    height: int
    faces: int  # annotated faces
    faces_by_size: tuple[int, ...]  # annotated faces with short side >= each SIZE_BANDS
    found: int  # annotated faces matched by a detection
    found_by_size: tuple[int, ...]
    detections: int
    false_detections: int  # detections matching no annotated face
    ms: float  # detection time (the engine's, decode excluded)
    tiles: int
    boxes: tuple[tuple[float, float, float, float], ...]  # detections, xyxy
    scores: tuple[float, ...]
    matched: tuple[int, ...]  # per detection: index of the annotated face, -1 = false

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "width": self.width, "height": self.height,
                             "faces": self.faces}
        for band, n, k in zip(SIZE_BANDS, self.faces_by_size, self.found_by_size, strict=True):
            d[f"faces_min{band}px"] = n
            d[f"found_min{band}px"] = k
        d.update({"found": self.found, "detections": self.detections,
                  "false_detections": self.false_detections, "ms": _num(self.ms, 2),
                  "tiles": self.tiles,
                  "boxes": [[round(v, 1) for v in b] for b in self.boxes],
                  "scores": [round(s, 4) for s in self.scores], "matched": list(self.matched)})
        return d


@dataclass(frozen=True, slots=True)
class DetectReport:
    """Face detection recall and false detections on annotated images."""

    counts_json: str
    root: str
    detector: dict[str, str]
    options: dict[str, Any]  # the detection options used (settings + overrides)
    matching: str
    iou: float
    images: tuple[ImageDetections, ...]
    seconds: float

    @property
    def faces(self) -> int:
        return sum(i.faces for i in self.images)

    @property
    def found(self) -> int:
        return sum(i.found for i in self.images)

    @property
    def detections(self) -> int:
        return sum(i.detections for i in self.images)

    @property
    def false_detections(self) -> int:
        return sum(i.false_detections for i in self.images)

    @property
    def recall(self) -> float:
        """Of all annotated faces, tiny ones included."""
        return self.found / self.faces if self.faces else float("nan")

    def faces_min(self, band: int) -> int:
        k = SIZE_BANDS.index(band)
        return sum(i.faces_by_size[k] for i in self.images)

    def recall_min(self, band: int) -> float:
        """Of the annotated faces whose short side is at least ``band`` px (10 or 20)."""
        k = SIZE_BANDS.index(band)
        n = self.faces_min(band)
        return sum(i.found_by_size[k] for i in self.images) / n if n else float("nan")

    @property
    def false_detection_rate(self) -> float:
        """False detections per detection (1 - precision)."""
        return self.false_detections / self.detections if self.detections else float("nan")

    @property
    def ms_per_image(self) -> float:
        return float(np.mean([i.ms for i in self.images])) if self.images else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "detect", "counts_json": self.counts_json, "root": self.root,
                             "detector": self.detector, "options": self.options,
                             "matching": self.matching, "iou": self.iou,
                             "image_count": len(self.images), "faces": self.faces}
        for band in SIZE_BANDS:
            d[f"faces_min{band}px"] = self.faces_min(band)
        for band in SIZE_BANDS:
            d[f"recall_min{band}px"] = _num(self.recall_min(band))
        d.update({"recall_all": _num(self.recall), "found": self.found,
                  "detections": self.detections, "false_detections": self.false_detections,
                  "false_detection_rate": _num(self.false_detection_rate),
                  "ms_per_image": _num(self.ms_per_image, 2), "seconds": _num(self.seconds, 2),
                  "images": [i.to_dict() for i in self.images]})
        return d


def evaluate_detect(engine: Any, counts_json: Path, root: Path | None = None, *,
                    detector: str | None = None, progress: Progress | None = None,
                    **detect_options: Any) -> DetectReport:
    """Recall at IoU 0.5 and false detections of ``engine.detect`` on annotated images.

    ``detect_options`` (any keyword of :func:`~facesocial.vision.detection.detect_faces`:
    ``score_threshold``, ``min_face_size``, ``tile_min_face``, ``max_side``, ...)
    override the settings as in :meth:`Engine.detect`; None keeps the setting. The
    report lists every option in effect. Matching is greedy one-to-one by detection
    score over ALL annotated faces (tiny ones included); recall is then reported for
    faces >= 10 px, >= 20 px and all.
    """
    options = _detect_options(engine.settings, detect_options)
    counts_json = Path(counts_json)
    truth = read_counts(counts_json)
    root = _root(root, counts_json)
    _check_images(root, truth, counts_json)
    spec = engine.resolve("face_detection", detector or engine.settings.detector)
    start = time.perf_counter()
    images: list[ImageDetections] = []
    ref = None
    _tick(progress, 0, len(truth))
    for i, (name, gt) in enumerate(truth.items(), start=1):
        rgb = _load(engine, root / name, name)
        dets = engine.detect(rgb, spec.id, **options)
        ref = dets.model
        truth_of_det, det_of_truth = match_detections(gt, dets.boxes, dets.scores, MATCH_IOU)
        sides = short_sides(gt) if len(gt) else np.zeros(0)
        found = det_of_truth >= 0
        images.append(ImageDetections(
            file=name, width=int(rgb.shape[1]), height=int(rgb.shape[0]), faces=len(gt),
            faces_by_size=tuple(int((sides >= b).sum()) for b in SIZE_BANDS),
            found=int(found.sum()),
            found_by_size=tuple(int((found & (sides >= b)).sum()) for b in SIZE_BANDS),
            detections=len(dets), false_detections=int((truth_of_det < 0).sum()),
            ms=dets.info.ms if dets.info is not None else float("nan"),
            tiles=dets.info.tiles if dets.info is not None else 0,
            boxes=tuple(tuple(float(v) for v in b) for b in dets.boxes),
            scores=tuple(float(v) for v in dets.scores),
            matched=tuple(int(t) for t in truth_of_det)))
        _tick(progress, i, len(truth))
    return DetectReport(
        counts_json=str(counts_json), root=str(root),
        detector=ref.to_dict() if ref is not None else {"id": spec.id, "version": spec.version},
        options=options, matching="greedy one-to-one by detection score", iou=MATCH_IOU,
        images=tuple(images), seconds=time.perf_counter() - start)


# ============================================================ anti-spoofing
def read_pad_labels(path: Path) -> dict[str, tuple[bool, str | None, str | None]]:
    """Live / attack labels per image: ``{"images": {"rel.jpg": {"live": bool,
    "attack": "print" | ... | null, "person": ...}}}`` -> {name: (live, attack, person)}."""
    path = Path(path)
    images = _read_json_images(path, "labels JSON")
    out: dict[str, tuple[bool, str | None, str | None]] = {}
    for name, entry in images.items():
        live = entry.get("live")
        if not isinstance(live, bool):
            raise InvalidInput(f"labels JSON {path}: images['{name}'] needs 'live': true or "
                               f"false", path=str(path), image=name)
        attack = entry.get("attack")
        person = entry.get("person")
        out[name] = (live, None if live else str(attack or "attack"),
                     None if person is None else str(person))
    return out


@dataclass(frozen=True, slots=True)
class PadImage:
    """The verdict on one labelled image (its largest face)."""

    file: str
    live: bool  # the label
    attack: str | None  # the label's attack type (None for live)
    person: str | None
    face: bool  # a face was found
    live_score: float | None  # None: no face
    verdict: str  # "live", "print", "replay", "spoof" or "no_face"
    accepted: bool  # judged live

    @property
    def correct(self) -> bool:
        return self.accepted == self.live

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "live": self.live, "attack": self.attack,
                "person": self.person, "face": self.face, "live_score": _num(self.live_score),
                "verdict": self.verdict, "accepted": self.accepted, "correct": self.correct}


@dataclass(frozen=True, slots=True)
class PadReport:
    """Presentation-attack detection (ISO/IEC 30107-3) on labelled images.

    ``apcer`` is the worst APCER over attack types (ISO/IEC 30107-3 reports the
    maximum over presentation-attack instrument species); ``apcer_by_attack``
    has each. Images with no face are rejected: a live one counts against
    BPCER, an attack one as correctly refused.
    """

    labels_json: str
    root: str
    models: tuple[dict[str, str], ...]
    detector: dict[str, str]
    threshold: float
    bona_fide: int
    attacks: int
    apcer: float
    apcer_by_attack: dict[str, float]
    bpcer: float
    roc_auc: float
    no_face_live: int
    no_face_attack: int
    images: tuple[PadImage, ...]
    seconds: float

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / len(self.images) if self.images else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "antispoof", "labels_json": self.labels_json, "root": self.root,
                "models": list(self.models), "detector": self.detector,
                "threshold": _num(self.threshold), "bona_fide": self.bona_fide,
                "attacks": self.attacks, "apcer": _num(self.apcer),
                "apcer_by_attack": {k: _num(v) for k, v in self.apcer_by_attack.items()},
                "bpcer": _num(self.bpcer), "roc_auc": _num(self.roc_auc),
                "no_face_live": self.no_face_live, "no_face_attack": self.no_face_attack,
                "errors": sum(not i.correct for i in self.images),
                "seconds": _num(self.seconds, 2), "ms_per_image": _num(self.ms_per_image, 2),
                "images": [i.to_dict() for i in self.images]}


def evaluate_antispoof(engine: Any, labels_json: Path, root: Path | None = None, *,
                       progress: Progress | None = None) -> PadReport:
    """APCER / BPCER of the engine's anti-spoofer at its threshold, largest face per image."""
    labels_json = Path(labels_json)
    labels = read_pad_labels(labels_json)
    root = _root(root, labels_json)
    _check_images(root, labels, labels_json)
    spoofer = engine.antispoofer()
    det = engine.resolve("face_detection", engine.settings.detector)
    start = time.perf_counter()
    results: list[PadImage] = []
    _tick(progress, 0, len(labels))
    for i, (name, (live, attack, person)) in enumerate(labels.items(), start=1):
        rgb = _load(engine, root / name, name)
        dets = engine.detect(rgb)
        if len(dets) == 0:
            results.append(PadImage(name, live, attack, person, False, None, "no_face", False))
        else:
            [res] = spoofer.predict(rgb, dets.boxes[[_largest(dets.boxes)]])
            results.append(PadImage(name, live, attack, person, True, float(res.live_score),
                                    res.verdict, bool(res.is_live)))
        _tick(progress, i, len(labels))
    seconds = time.perf_counter() - start
    # no face = rejected: a score below any threshold in [0, 1]
    scores = np.array([-1.0 if r.live_score is None else r.live_score for r in results])
    is_live = np.array([r.live for r in results], bool)
    pooled = pad_rates(scores, is_live, spoofer.threshold)
    by_attack: dict[str, float] = {}
    for kind in dict.fromkeys(r.attack for r in results if r.attack is not None):
        sel = np.array([r.live or r.attack == kind for r in results], bool)
        by_attack[kind] = pad_rates(scores[sel], is_live[sel], spoofer.threshold).apcer
    return PadReport(
        labels_json=str(labels_json), root=str(root),
        models=tuple(m.to_dict() for m in spoofer.models),
        detector={"id": det.id, "version": det.version}, threshold=spoofer.threshold,
        bona_fide=pooled.bona_fide, attacks=pooled.attacks,
        apcer=max(by_attack.values()) if by_attack else float("nan"),
        apcer_by_attack=by_attack, bpcer=pooled.bpcer, roc_auc=roc_auc(scores, is_live),
        no_face_live=sum(r.live and not r.face for r in results),
        no_face_attack=sum(not r.live and not r.face for r in results),
        images=tuple(results), seconds=seconds)
