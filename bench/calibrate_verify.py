"""Calibrate 1:1 verification thresholds per embedding model on the CFP dev set.

For every embedding model given, embeds the largest face of every CFP dev
photo (150 people x 14 photos), forms ALL impostor pairs (photos of different
people, about 2 million) and all genuine pairs, and writes into the package
catalog (src/facesocial/models/catalog.json) under each model's
``thresholds``:

- ``default``: the threshold at a false-match rate of 1e-3,
- ``strict``: the threshold at FMR 1e-4,
- ``fmr_curve``: (score, FMR) points so verify can report the estimated FMR
  of any score.

It prints FNMR at both thresholds and the CFP protocol accuracy (FF, FP).
Usage:  python bench/calibrate_verify.py [--models w600k_mbf_folded mobilefacenet dlib_resnet]
        [--write]   (without --write it only prints)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from facesocial.engine import Engine
from facesocial.errors import NoFaceFound
from facesocial.evaluation import (
    fmr_at,
    fmr_curve,
    fnmr_at,
    kfold_accuracy,
    roc_auc,
    threshold_at_fmr,
)
from facesocial.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CFP = REPO.parent / "shared" / "testdata" / "dev" / "cfp"
CATALOG = REPO / "src" / "facesocial" / "models" / "catalog.json"
CACHE = REPO / "bench" / "results"


def embed_all(engine: Engine, model: str, files: list[str]) -> dict[str, np.ndarray]:
    cache = CACHE / f"cfp_{model}.npz"
    if cache.is_file():
        data = np.load(cache)
        return {k: data[k] for k in data.files}
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        try:
            out[f] = engine.embed_largest(CFP / f, embedder=model).vector
        except NoFaceFound:
            pass
        if i % 200 == 0:
            took = time.perf_counter() - t0
            print(f"  {model}: {i}/{len(files)} ({took:.0f} s)", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+",
                    default=["w600k_mbf_folded", "w600k_mbf_int8", "mobilefacenet", "dlib_resnet"])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args()
    settings = Settings(**({"model_dir": args.model_dir} if args.model_dir else {}))
    engine = Engine(settings)
    files = sorted(str(p.relative_to(CFP)) for p in (CFP / "images").rglob("*.jpg"))
    with open(CFP / "pairs.csv") as fh:
        pairs = list(csv.DictReader(fh))
    catalog = json.loads(CATALOG.read_text())
    for model in args.models:
        emb = embed_all(engine, model, files)
        version = engine.embed_largest(CFP / files[0], embedder=model).model.version
        keys = [f for f in files if f in emb]
        X = np.stack([emb[k] for k in keys]).astype(np.float32)
        P = np.array([k.split("/")[1] for k in keys])
        S = X @ X.T
        iu = np.triu_indices(len(keys), 1)
        scores = S[iu]
        same = P[iu[0]] == P[iu[1]]
        imp, gen = scores[~same], scores[same]
        t3, t4 = threshold_at_fmr(imp, 1e-3), threshold_at_fmr(imp, 1e-4)
        print(f"\n{model} ({version}): {len(keys)}/{len(files)} photos with a face; "
              f"{len(imp)} impostor and {len(gen)} genuine pairs")
        print(f"  FMR 1e-3 -> threshold {t3:.4f}: FNMR {fnmr_at(gen, t3):.4f}")
        print(f"  FMR 1e-4 -> threshold {t4:.4f}: FNMR {fnmr_at(gen, t4):.4f}")
        for proto in ("FF", "FP"):
            rows = [r for r in pairs if r["protocol"] == proto]
            sc = np.array([float(emb[r["file_x"]] @ emb[r["file_y"]])
                           if r["file_x"] in emb and r["file_y"] in emb else -1.0 for r in rows])
            lab = np.array([r["same"] == "1" for r in rows])
            fo = np.array([int(r["fold"]) for r in rows])
            acc, sd = kfold_accuracy(sc, lab, fo)
            acc_d = float(((sc >= t3) == lab).mean())
            print(f"  CFP {proto}: {len(rows)} pairs, fold accuracy {acc:.4f} (+-{sd:.4f}), "
                  f"at default threshold {acc_d:.4f}, AUC {roc_auc(sc, lab):.4f}, "
                  f"FMR {fmr_at(sc[~lab], t3):.4f} FNMR {fnmr_at(sc[lab], t3):.4f}")
        entry = next(m for m in catalog["models"] if m["id"] == model)
        entry["thresholds"] = {
            "default": round(t3, 4), "default_fmr": 1e-3,
            "strict": round(t4, 4), "strict_fmr": 1e-4,
            "calibration": (f"pipeline {version}; CFP dev set ({len(keys)} photos of 150 people, "
                            f"frontal and profile): "
                            f"all {len(imp)} impostor pairs; FNMR over {len(gen)} genuine pairs "
                            f"{fnmr_at(gen, t3):.3f} at default, {fnmr_at(gen, t4):.3f} at strict; "
                            f"bench/calibrate_verify.py"),
            "fmr_curve": [[round(s, 5), float(f"{r:.3g}")] for s, r in fmr_curve(imp)],
        }
        if args.write:  # after each model, so a long run keeps what it finished
            CATALOG.write_text(json.dumps(catalog, indent=1) + "\n")
            print(f"  wrote {model}'s thresholds into {CATALOG}")


if __name__ == "__main__":
    main()
