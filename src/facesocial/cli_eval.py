"""``facesocial eval``: the product's accuracy on labelled sets.

  facesocial eval verify PAIRS.csv [--root DIR] [--embedder ID] [--strict] [--json]
  facesocial eval detect COUNTS.json [--root DIR] [--detector ID] [--min-face-size N]
                         [--score F] [--json]
  facesocial eval antispoof LABELS.json [--root DIR] [--json]

Image paths in the labels are relative to ``--root`` (default: the labels
file's directory). Human tables go to stdout, progress bars to stderr; with
``--json`` stdout holds exactly one JSON document (the report's ``to_dict()``).

Exit codes (as ``facesocial``): 0 success, 3 bad input (missing or malformed
labels file, missing or unreadable image), 4 model problem (not installed).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facesocial.errors import FaceSocialError, ModelError

# the same codes as facesocial.cli (not imported: cli.py mounts this module)
EXIT_OK, EXIT_INPUT, EXIT_MODEL = 0, 3, 4

eval_app = typer.Typer(help="Measure accuracy on labelled sets (verification, detection, "
                            "anti-spoofing).", no_args_is_help=True,
                       pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)

RootOpt = Annotated[Path | None, typer.Option("--root", help="directory the image paths are "
                                                             "relative to (default: the labels "
                                                             "file's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]


def _engine() -> Any:
    from facesocial.engine import Engine
    from facesocial.settings import Settings

    return Engine(Settings())


def _fail(exc: FaceSocialError) -> typer.Exit:
    err.print(f"[red]error[/red] {escape(f'[{exc.code}] {exc.message}')}", soft_wrap=True)
    return typer.Exit(EXIT_MODEL if isinstance(exc, ModelError) else EXIT_INPUT)


@contextmanager
def _bar(label: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield progress


def _run(label: str, fn: Callable[[Any, Callable[[int, int], None]], Any]) -> Any:
    """``fn(engine, progress)`` under a progress bar; FaceSocialError -> exit 3 or 4."""
    engine = None
    try:
        engine = _engine()
        with _bar(label) as progress:
            return fn(engine, progress)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    finally:
        close = getattr(engine, "close", None)  # releases the model manager where there is one
        if close is not None:
            close()


def _emit_json(report: Any) -> None:
    sys.stdout.write(json.dumps(report.to_dict(), allow_nan=False) + "\n")


def _short_names(files: list[str]) -> list[str]:
    """File stems, with a long prefix they all share replaced by '…' (tables stay narrow)."""
    stems = [Path(f).stem for f in files]
    if len(stems) < 2:
        return stems
    prefix = os.path.commonprefix(stems)
    prefix = prefix[:min(len(s) for s in stems) - 1]  # keep at least one character
    return stems if len(prefix) < 8 else ["…" + s[len(prefix):] for s in stems]


def _pct(x: float | None, nd: int = 1) -> str:
    return "-" if x is None or x != x else f"{100 * x:.{nd}f}%"


def _f(x: float | None, nd: int = 4) -> str:
    return "-" if x is None or x != x else f"{x:.{nd}f}"


# ------------------------------------------------------------------- verify
@eval_app.command("verify")
def eval_verify(
    pairs: Annotated[Path, typer.Argument(help="CSV: file_x,file_y,same[,protocol,fold]",
                                          show_default=False)],
    root: RootOpt = None,
    embedder: Annotated[str | None, typer.Option(help="embedding model id (default: the "
                                                      "product's)")] = None,
    strict: Annotated[bool, typer.Option(help="use the strict (lower FMR) threshold")] = False,
    as_json: JsonOpt = False,
) -> None:
    """1:1 verification: accuracy at the product threshold, k-fold accuracy, AUC, FMR/FNMR."""
    from facesocial.evaluate import evaluate_verify

    report = _run("embedding photos", lambda engine, p: evaluate_verify(
        engine, pairs, root, embedder=embedder, threshold="strict" if strict else "default",
        progress=p))
    if as_json:
        _emit_json(report)
        return
    out.print(f"[bold]{escape(str(pairs))}[/bold]: {len(report.results)} pairs, "
              f"{report.photos} photos ({len(report.photos_without_face)} without a face), "
              f"embedder {report.embedder['id']}, detector {report.detector['id']}, "
              f"threshold {report.threshold:.4f} ({report.threshold_name})")
    table = Table()
    for col in ("protocol", "pairs", "accuracy", "k-fold accuracy", "ROC AUC", "FMR", "FNMR",
                "no-face pairs"):
        table.add_column(col, justify="left" if col == "protocol" else "right")
    groups = [*report.protocols, report.overall] if len(report.protocols) != 1 \
        else list(report.protocols)
    for m in groups:
        kfold = "-" if m.kfold_accuracy is None else \
            f"{_pct(m.kfold_accuracy, 2)} ± {_pct(m.kfold_std, 2)} ({m.folds} folds)"
        table.add_row(m.name, str(m.pairs), _pct(m.accuracy, 2), kfold, _f(m.roc_auc),
                      _pct(m.fmr, 2), _pct(m.fnmr, 2), str(m.pairs_without_face))
    out.print(table)
    out.print(f"accuracy, FMR and FNMR at the product threshold; k-fold: threshold chosen on the "
              f"other folds. {report.seconds:.1f} s "
              f"({1000 * report.seconds / max(report.photos, 1):.0f} ms per photo)")


# ------------------------------------------------------------------- detect
@eval_app.command("detect")
def eval_detect(
    counts: Annotated[Path, typer.Argument(help="JSON: images -> {boxes_xywh: [[x,y,w,h]...]}",
                                           show_default=False)],
    root: RootOpt = None,
    detector: Annotated[str | None, typer.Option(help="detector model id (default: the "
                                                      "product's)")] = None,
    min_face_size: Annotated[float | None, typer.Option(
        "--min-face-size", help="px; smaller faces are dropped and tiling looks down to "
                                "this size (default: the setting)")] = None,
    score: Annotated[float | None, typer.Option(
        "--score", help="detection score threshold (default: the setting)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Face detection: recall at IoU 0.5 (faces >= 10 px, >= 20 px, all) and false detections."""
    from facesocial.evaluate import SIZE_BANDS, evaluate_detect

    report = _run("detecting", lambda engine, p: evaluate_detect(
        engine, counts, root, detector=detector, progress=p, min_face_size=min_face_size,
        score_threshold=score))
    if as_json:
        _emit_json(report)
        return
    o = report.options
    floor = f" (tiles look for faces >= {o['tile_min_face']:g} px)" \
        if not o["min_face_size"] and o.get("tile_min_face") else ""
    out.print(f"[bold]{escape(str(counts))}[/bold]: {len(report.images)} images, "
              f"{report.faces} annotated faces; detector {report.detector['id']}, score >= "
              f"{o['score_threshold']:g}, min face {o['min_face_size']:g} px{floor}, max side "
              f"{o['max_side']}, tiles {o['tile_size']}; matching {report.matching} at IoU "
              f"{report.iou:g}")
    table = Table()
    cols = ["image", "faces", *[f">={b}px" for b in SIZE_BANDS], "all", "dets", "false",
            "tiles", "ms"]
    for col in cols:
        table.add_column(col, justify="left" if col == "image" else "right",
                         no_wrap=True)
    for im, name in zip(report.images, _short_names([im.file for im in report.images]),
                        strict=True):
        bands = [f"{k}/{n}" for n, k in zip(im.faces_by_size, im.found_by_size, strict=True)]
        table.add_row(escape(name), str(im.faces), *bands,
                      f"{im.found}/{im.faces}", str(im.detections), str(im.false_detections),
                      str(im.tiles), f"{im.ms:.0f}")
    table.add_section()
    table.add_row("recall", "", *[_pct(report.recall_min(b)) for b in SIZE_BANDS],
                  _pct(report.recall), str(report.detections),
                  f"{report.false_detections} ({_pct(report.false_detection_rate)})", "",
                  f"{report.ms_per_image:.0f}")
    out.print(table)
    out.print(f"found/annotated faces per size band; false: detections matching no annotated "
              f"face (tiny ones included), as a share of all detections; ms: detection per "
              f"image. {report.seconds:.1f} s")


# ---------------------------------------------------------------- antispoof
@eval_app.command("antispoof")
def eval_antispoof(
    labels: Annotated[Path, typer.Argument(help="JSON: images -> {live, attack, person}",
                                           show_default=False)],
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Anti-spoofing: APCER and BPCER (ISO/IEC 30107-3) at the product threshold, ROC AUC."""
    from facesocial.evaluate import evaluate_antispoof

    report = _run("checking liveness", lambda engine, p: evaluate_antispoof(
        engine, labels, root, progress=p))
    if as_json:
        _emit_json(report)
        return
    models = ", ".join(m["id"] for m in report.models)
    out.print(f"[bold]{escape(str(labels))}[/bold]: {report.bona_fide} live and "
              f"{report.attacks} attack images; {models} at live score >= "
              f"{report.threshold:g}; largest {report.detector['id']} face per image")
    table = Table()
    for col in ("metric", "value", "meaning"):
        table.add_column(col)
    table.add_row("APCER", _pct(report.apcer, 2), "attacks accepted as live (worst attack type)")
    for kind, rate in report.apcer_by_attack.items():
        table.add_row(f"  APCER {escape(kind)}", _pct(rate, 2), "")
    table.add_row("BPCER", _pct(report.bpcer, 2), "live presentations rejected")
    table.add_row("ROC AUC", _f(report.roc_auc), "")
    table.add_row("no face", f"{report.no_face_live} live, {report.no_face_attack} attack",
                  "rejected (a live one counts in BPCER)")
    out.print(table)
    wrong = [im for im in report.images if not im.correct]
    if wrong:
        shown = ", ".join(f"{escape(Path(im.file).name)} ({im.verdict} "
                          f"{_f(im.live_score, 3)})" for im in wrong[:8])
        more = f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        out.print(f"{len(wrong)} wrong: {shown}{more}")
    out.print(f"{report.seconds:.1f} s ({report.ms_per_image:.0f} ms per image)")
