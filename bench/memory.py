"""Memory per model: what loading each model through the model manager costs this process.

Each model is loaded by facesocial's ModelManager (the product's session options), one
after another in a fresh process per model, and warmed with one inference at the input
shape the product feeds it; reported: the file size, the process's resident memory growth
(RSS after warm-up minus RSS before the load), the catalog's estimate and what the manager
charged. In-process RSS growth is what a CPU deployment pays; GPU memory is measured by
bench/gpu_check.py on a GPU machine.

    python bench/memory.py [--model-home DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import fmt, machine_info, md_table, model_home, print_run_header

DISTS = (("facesocial", "facesocial"), ("onnxruntime", "onnxruntime"))


def rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(home: str, model_id: str) -> dict[str, Any]:
    import numpy as np

    from facesocial.models.catalog import Catalog
    from facesocial.models.manager import ModelManager
    from facesocial.models.store import ModelStore
    from facesocial.settings import Settings

    settings = Settings(model_dir=home, warmup=False)
    catalog = Catalog.load()
    store = ModelStore(settings, catalog)
    manager = ModelManager(settings, catalog, store)
    spec = catalog.get(model_id)
    before = rss_mb()
    model = manager.acquire(model_id)
    try:
        inp = model.session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        if len(shape) == 4 and (shape[2] == 1 or shape[3] == 1):  # dynamic spatial dims
            size = 640 if spec.task == "face_detection" else 112
            shape[2] = shape[3] = size
        dtype = np.float32 if "float" in inp.type else np.uint8
        model.session.run(None, {inp.name: np.zeros(shape, dtype)})
        after = rss_mb()
    finally:
        manager.release(model_id)
    status = {s["id"]: s for s in manager.status()}[model_id]
    manager.close()
    path = store.path(model_id)
    return {"model": model_id, "task": spec.task, "file_mb": path.stat().st_size / 2**20,
            "rss_growth_mb": after - before, "estimated_mb": status["estimated_mb"],
            "charged_mb": status["charged_mb"], "input_shape": shape}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-home", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, metavar=("HOME", "MODEL"))
    ap.add_argument("--quick", action="store_true", help="(same run; it is quick)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = machine_info(command, DISTS)
    home = model_home(args.model_home)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from facesocial.models.catalog import Catalog
    from facesocial.models.store import ModelStore
    from facesocial.settings import Settings

    catalog = Catalog.load()
    store = ModelStore(Settings(model_dir=home), catalog)
    ids = [s.id for s in catalog if str(s.file).endswith(".onnx") and store.is_installed(s.id)
           and s.id != "w600k_mbf_int8"]
    rows = []
    for model_id in ids:
        out = subprocess.run([sys.executable, __file__, "--child", str(home), model_id],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            print(f"  {model_id}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {model_id}: RSS +{row['rss_growth_mb']:.0f} MB", flush=True)
    print()
    print_run_header(info, command)
    print()
    print(md_table(["model", "task", "file MB", "RSS growth MB (load + 1 inference)",
                    "catalog estimate MB", "input"],
                   [[r["model"], r["task"], fmt(r["file_mb"], 1), fmt(r["rss_growth_mb"], 0),
                     fmt(r["estimated_mb"], 0), "x".join(map(str, r["input_shape"]))]
                    for r in rows]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
