"""Calibrate the live/spoof threshold on the NUAA dev set and report APCER/BPCER.

For every NUAA dev frame (live webcam frames and printed-photo attacks of 6
people), takes the largest detected face, scores it with each anti-spoofing
model, and picks the live-score threshold that rejects at most 1% of live
frames (BPCER <= 1%, ISO/IEC 30107-3). Writes it into the catalog entry's
``thresholds.default`` with --write. The engine's live decision uses the
binary model's threshold (see vision/liveness.py for why the binary score
alone decides live vs spoof).

Usage: python bench/calibrate_antispoof.py [--write] [--bpcer 0.01]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from facesocial.engine import Engine
from facesocial.evaluation import pad_rates, roc_auc, threshold_at_bpcer
from facesocial.settings import Settings

REPO = Path(__file__).resolve().parents[1]
NUAA = REPO.parent / "shared" / "testdata" / "dev" / "nuaa"
CATALOG = REPO / "src" / "facesocial" / "models" / "catalog.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--bpcer", type=float, default=0.01)
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args()
    engine = Engine(Settings(**({"model_dir": args.model_dir} if args.model_dir else {})))
    labels = json.loads((NUAA / "labels.json").read_text())["images"]
    spoofer = engine.antispoofer()
    binary, three, live = [], [], []
    for name, lab in sorted(labels.items()):
        rgb = engine.image(NUAA / name)
        dets = engine.detect(rgb)
        if len(dets) == 0:
            continue  # counts as rejected; reported below
        areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
        box = dets.boxes[[int(np.argmax(areas))]]
        [res] = spoofer.predict(rgb, box)
        binary.append(res.binary_live)
        three.append(res.classes["live"] if res.classes else np.nan)
        live.append(bool(lab["live"]))
    live_a = np.array(live)
    catalog = json.loads(CATALOG.read_text())
    print(f"NUAA dev: {live_a.sum()} live and {(~live_a).sum()} attack frames with a face "
          f"(of {len(labels)})")
    for model_id, scores in (("antispoof_binary", np.array(binary)),
                             ("antispoof_print_replay", np.array(three))):
        thr = threshold_at_bpcer(scores, live_a, args.bpcer)
        r = pad_rates(scores, live_a, thr)
        r5 = pad_rates(scores, live_a, 0.5)
        print(f"{model_id}: AUC {roc_auc(scores, live_a):.4f}; at 0.5: APCER {r5.apcer:.3f} "
              f"BPCER {r5.bpcer:.3f}; calibrated {thr:.4f}: APCER {r.apcer:.3f} "
              f"BPCER {r.bpcer:.3f}")
        entry = next(m for m in catalog["models"] if m["id"] == model_id)
        entry["thresholds"] = {
            "default": round(thr, 4),
            "calibration": (f"live-probability threshold at BPCER <= {args.bpcer:g} on the NUAA "
                            f"dev set ({r.bona_fide} live, {r.attacks} print frames, 6 people): "
                            f"APCER {r.apcer:.3f}, BPCER {r.bpcer:.3f}; "
                            f"bench/calibrate_antispoof.py"),
        }
    if args.write:
        CATALOG.write_text(json.dumps(catalog, indent=1) + "\n")
        print(f"wrote thresholds into {CATALOG}")


if __name__ == "__main__":
    main()
