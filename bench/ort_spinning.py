"""ONNX Runtime's busy-waiting intra-op threads on and off: time per image of the engine.

Runs the in-process engine (detect, embed, antispoof: the models a realtime request uses)
over the labelled face photos, best of 3 passes, once with FACESOCIAL_INTRA_OP_SPINNING on
(ONNX Runtime's own default) and once off (facesocial's default), in separate processes
so each gets fresh sessions.

    python bench/ort_spinning.py [--model-home DIR] [--rounds 2]
"""

from __future__ import annotations

import argparse
import glob
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import fmt, machine_info, md_table, print_run_header

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "testdata" / "faces"
DISTS = (("facesocial", "facesocial"), ("onnxruntime", "onnxruntime"))


def child(model_home: str, spinning: bool) -> None:
    from facesocial.engine import Engine
    from facesocial.settings import Settings

    e = Engine(Settings(model_dir=model_home, intra_op_spinning=spinning))
    imgs = [e.image(f) for f in sorted(glob.glob(str(PHOTOS / "*")))]
    for im in imgs[:3]:
        e.analyze(im, ("detect", "embed", "antispoof"))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for im in imgs:
            e.analyze(im, ("detect", "embed", "antispoof"))
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"ms_per_image": best / len(imgs) * 1000, "images": len(imgs)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-home", default=str(Path.home() / ".cache/facesocial/models"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=["on", "off"])
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.model_home, args.child == "on")
        return
    if args.quick:
        args.rounds = 1
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = machine_info(command, DISTS)
    rows = []
    data = []
    for r in range(args.rounds):
        for mode in ("on", "off"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--model-home",
                                  args.model_home], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([r + 1, mode, res["images"], fmt(res["ms_per_image"], 1)])
            data.append({"round": r + 1, "spinning": mode, **res})
            print(f"  round {r + 1} spinning {mode}: {res['ms_per_image']:.1f} ms/image",
                  flush=True)
    print()
    print_run_header(info, command)
    print()
    print(md_table(["round", "intra-op spinning", "images", "ms per image (best of 3)"], rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "rows": data}, indent=1))


if __name__ == "__main__":
    main()
