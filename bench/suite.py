"""Run every benchmark and write one report: BENCHMARKS.md plus plots in bench/results/.

    python bench/suite.py [--quick] [--only engine,search,...] [--skip gpu,...]
                          [--model-home DIR] [--report BENCHMARKS.md]
    facesocial bench [--quick] ...            # the same, from a source checkout
    make bench                                # installs the bench extras, then the same

Each script runs in its own process (so one's threads and memory do not disturb the
next), with ``--json bench/results/<name>.json``. A ``--quick`` run writes into
``bench/results/quick/`` instead (report: ``bench/results/quick/BENCHMARKS.md``, not kept in
git), so a smoke run never overwrites the full results; its printed tables (markdown, each with
the machine, date, versions and exact command) go to ``bench/results/<name>.md`` and its
log to ``<name>.log``. The report (:mod:`report`) puts the targets first, then each
script's tables, the plots and the notes in ``bench/notes/<name>.md``. A script that fails
or cannot run here (no GPU for ``gpu_check``) is reported as such, with its command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Script:
    name: str
    title: str
    argv: tuple[str, ...]  # full run
    quick: tuple[str, ...]  # --quick run
    takes_model_home: str | None = "--model-home"  # the flag, when the script has one
    timeout_s: int = 3600


SCRIPTS: tuple[Script, ...] = (
    Script("engine", "Engine: per-stage latency, facesocial vs face_recognition and OpenCV",
           ("engine.py",), ("engine.py", "--quick"), "--model-dir", 3600),
    Script("roofline", "The physical bound: each model against the matrix-multiply rate",
           ("roofline.py",), ("roofline.py", "--quick")),
    Script("memory", "Memory per model", ("memory.py",), ("memory.py",)),
    Script("ort_spinning", "ONNX Runtime thread spinning", ("ort_spinning.py",),
           ("ort_spinning.py", "--quick")),
    Script("search", "Gallery search: in-process index, exact, FAISS, pgvector HNSW",
           ("search.py", "--sizes", "100000,1000000", "--pg-sizes", "100000,1000000"),
           ("search.py", "--quick"), None, 4 * 3600),
    Script("api_load", "HTTP API load", ("api_load.py",), ("api_load.py", "--quick")),
    Script("sessions", "Continuous-authentication sessions", ("sessions.py",),
           ("sessions.py", "--quick")),
    Script("batch", "Batch jobs: embedded executor and Celery workers", ("batch.py",),
           ("batch.py", "--quick")),
    Script("batching", "Micro-batching in the model manager", ("batching.py",),
           ("batching.py", "--quick"), "--model-dir"),
    Script("gpu", "GPU: every model through the model manager on CUDA",
           ("gpu_check.py",), ("gpu_check.py",), "--model-dir"),
)


@dataclass
class Outcome:
    name: str
    title: str
    command: str
    status: str  # ok | failed | not run
    seconds: float
    reason: str = ""


def cuda_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001
        return False


def run_script(script: Script, quick: bool, model_home: str | None,
               results: Path = RESULTS) -> Outcome:
    argv = list(script.quick if quick else script.argv)
    if model_home and script.takes_model_home:
        argv += [script.takes_model_home, model_home]
    argv += ["--json", os.path.relpath(results / f"{script.name}.json", BENCH)]  # cwd: bench/
    command = "cd bench && python " + shlex.join(argv)
    if script.name == "gpu" and not cuda_available():
        return Outcome(script.name, script.title, command, "not run", 0.0,
                       "no CUDA device here (onnxruntime has no CUDAExecutionProvider); run "
                       "this command on a GPU machine with `pip install -e .[gpu]`")
    print(f"== {script.name}: {command}", flush=True)
    t0 = time.perf_counter()
    with open(results / f"{script.name}.md", "w") as out, \
            open(results / f"{script.name}.log", "w") as log:
        try:
            done = subprocess.run([sys.executable, *argv], cwd=BENCH, stdout=out, stderr=log,
                                  timeout=script.timeout_s, env={**os.environ,
                                                                 "PYTHONUNBUFFERED": "1"})
            status = "ok" if done.returncode == 0 else "failed"
            reason = "" if done.returncode == 0 else f"exit code {done.returncode}"
        except subprocess.TimeoutExpired:
            status, reason = "failed", f"timed out after {script.timeout_s} s"
    seconds = time.perf_counter() - t0
    if status == "failed":
        tail = (results / f"{script.name}.log").read_text(errors="replace").strip()[-600:]
        reason += f"; log tail: {tail}" if tail else ""
    print(f"   {status} in {seconds:.0f} s {reason[:200]}", flush=True)
    return Outcome(script.name, script.title, command, status, seconds, reason)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (minutes)")
    ap.add_argument("--only", default="", help="comma list of scripts to run")
    ap.add_argument("--skip", default="", help="comma list of scripts to leave out")
    ap.add_argument("--model-home", default=None, help="default: each script pulls its own "
                    "from the shared mirror")
    ap.add_argument("--report", default=None, help="default: BENCHMARKS.md (a --quick run: "
                    "bench/results/quick/BENCHMARKS.md)")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report and plots "
                    "from bench/results without running anything")
    args = ap.parse_args(argv)
    results = RESULTS / "quick" if args.quick else RESULTS
    report_path = Path(args.report) if args.report else \
        (results / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md")
    results.mkdir(parents=True, exist_ok=True)
    only = {s for s in args.only.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    unknown = (only | skip) - {s.name for s in SCRIPTS}
    if unknown:
        ap.error(f"unknown scripts: {', '.join(sorted(unknown))}")
    outcomes_file = results / "suite.json"
    previous = {o["name"]: o for o in json.loads(outcomes_file.read_text())["outcomes"]} \
        if outcomes_file.exists() else {}
    if not args.report_only:
        for script in SCRIPTS:
            if (only and script.name not in only) or script.name in skip:
                continue
            previous[script.name] = asdict(run_script(script, args.quick, args.model_home,
                                                      results))
        outcomes_file.write_text(json.dumps({"outcomes": list(previous.values()),
                                             "quick": args.quick}, indent=1))
    from report import write_report

    write_report(report_path, results, [previous[s.name] for s in SCRIPTS
                                              if s.name in previous],
                 command="python bench/suite.py " + shlex.join(argv or sys.argv[1:]))
    print(f"wrote {report_path} and plots in {results}")
    return 0 if all(o["status"] != "failed" for o in previous.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
