"""The ``facesocial`` command line.

Exit codes scripts can rely on:
  0 success (for ``verify``: the faces match)
  1 ``verify`` ran and the faces do not match; ``models verify`` found a bad file
  2 usage error (bad flags or arguments)
  3 bad input (unreadable image, no face where one is required, unknown task)
  4 model problem (not installed, checksum mismatch, download failed)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from facesocial.cli_batch import batch_app
from facesocial.cli_eval import eval_app
from facesocial.errors import FaceSocialError, InvalidInput, ModelError
from facesocial.settings import Settings

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3, 4

app = typer.Typer(help="FaceSocial AI: self-hosted face analysis.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models_app = typer.Typer(help="Model catalog and store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(batch_app, name="batch")
app.add_typer(eval_app, name="eval", help="Measure accuracy on labelled data (pairs, face "
              "counts, liveness labels).")
# rich assumes 80 columns when not on a terminal; tables read better wider in logs and pipes
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _settings() -> Settings:
    return Settings()


def _engine(settings: Settings | None = None) -> Any:
    from facesocial.engine import Engine

    return Engine(settings or _settings())


def _fail(exc: FaceSocialError) -> typer.Exit:
    err.print(f"[red]error[/red] {_describe(exc)}")
    return typer.Exit(EXIT_MODEL if isinstance(exc, ModelError) else EXIT_INPUT)


def _describe(exc: FaceSocialError) -> str:
    return escape(f"[{exc.code}] {exc.message}")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# ------------------------------------------------------------------- models
@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every model in the catalog: task, installed or not, licence and size."""
    from facesocial.models.catalog import Catalog
    from facesocial.models.store import ModelStore

    settings = _settings()
    catalog = Catalog.load()
    store = ModelStore(settings, catalog)
    rows = []
    for spec in catalog:
        st = store.state(spec)
        rows.append({"id": spec.id, "task": spec.task, "installed": st.installed,
                     "where": st.where, "bytes": spec.bytes, "license": spec.license,
                     "version": spec.version, "source": spec.source.kind})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"models (home: {store.home})")
    for col in ("id", "task", "installed", "size", "licence", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["task"], "[green]yes[/green]" if r["installed"] else "no",
                      _human(r["bytes"]) if r["bytes"] else "-", r["license"][:60],
                      r["where"] if r["installed"] else r["source"])
    out.print(table)


@models_app.command("pull")
def models_pull(
    ids: Annotated[list[str] | None, typer.Argument(help="model ids; default: all")] = None,
    mirror: Annotated[Path | None, typer.Option("--from", help="mirror directory")] = None,
    force: Annotated[bool, typer.Option(help="re-fetch installed files")] = False,
) -> None:
    """Download (or copy from a mirror) models into the model home, checking sha256."""
    from facesocial.models.catalog import Catalog
    from facesocial.models.store import ModelStore

    settings = _settings()
    store = ModelStore(settings, Catalog.load())
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(model_id: str, done: int, total: int | None) -> None:
            if model_id not in tasks:
                tasks[model_id] = bar.add_task(model_id, total=total)
            bar.update(tasks[model_id], completed=done, total=total)

        try:
            states = store.pull(ids or None, mirror=mirror, progress=progress, force=force)
        except FaceSocialError as exc:
            raise _fail(exc) from None
    for st in states:
        out.print(f"[green]ok[/green] {st.spec.id} ({st.spec.version}) {st.where}")
    for model_id, rec in store.derived().items():
        out.print(f"[green]derived[/green] {model_id} ({rec['transform']}) sha256 "
                  f"{rec['sha256'][:12]}")


@models_app.command("verify")
def models_verify(ids: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Re-check the sha256 of every installed model file."""
    from facesocial.models.catalog import Catalog
    from facesocial.models.store import ModelStore

    store = ModelStore(_settings(), Catalog.load())
    try:
        results = store.verify(ids or None)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    bad = 0
    for r in results:
        colour = "green" if r.ok else "red"
        out.print(f"[{colour}]{'ok' if r.ok else 'BAD'}[/{colour}] {r.model_id}: {r.reason}")
        bad += not r.ok
    raise typer.Exit(EXIT_NO_MATCH if bad else EXIT_OK)


@models_app.command("status")
def models_status(
    load: Annotated[list[str] | None, typer.Option("--load", help="also load these models")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What the model manager holds: device, zone, memory, state, hits, fallbacks.

    In a fresh process this warms the critical models (as the service does at start) and any
    --load models, then reports; a running service reports the same at /system/models.
    """
    from facesocial.models.catalog import Catalog
    from facesocial.models.manager import ModelManager
    from facesocial.models.store import ModelStore

    settings = _settings()
    catalog = Catalog.load()
    manager = ModelManager(settings, catalog, ModelStore(settings, catalog))
    try:
        if settings.warm_critical:
            manager.warm_up()
        for model_id in load or []:
            manager.load(model_id)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    status, vram = manager.status(), manager.vram()
    manager.close()
    if as_json:
        out.print_json(json.dumps({"models": status, "memory": vram}))
        return
    device = vram["device"] or "none (CPU only)"
    out.print(f"device: {device}  budget {vram['budget_mb']:.0f} MB  "
              f"cpu {vram['cpu']['used_mb']:.0f}/{vram['cpu']['budget_mb']:.0f} MB")
    for zone, z in vram["zones"].items():
        out.print(f"  zone {zone:9s} {z['used_mb']:7.0f} / {z['budget_mb']:7.0f} MB")
    table = Table()
    for col in ("id", "zone", "state", "device", "est MB", "measured MB", "load ms", "hits",
                "fallbacks", "batched"):
        table.add_column(col)
    for m in status:
        table.add_row(m["id"], m["zone"], m["state"], str(m["device"] or "-"),
                      f"{m['estimated_mb']:.0f}", str(m["measured_mb"] or "-"),
                      f"{m['load_ms']:.0f}", str(m["hits"]), str(m["fallbacks"]),
                      "yes" if m["batched"] else "no")
    out.print(table)


@models_app.command("import")
def models_import(
    kind: Annotated[str, typer.Argument(help="what to import: meso4")],
    h5: Annotated[Path, typer.Option("--h5", help="the authors' Keras h5 weights")],
    model_id: Annotated[str, typer.Option("--id", help="catalog id to write")] = "meso4_deepfake",
) -> None:
    """Write a model's ONNX from its upstream artifact (Meso4: Keras h5)."""
    from facesocial.models.catalog import Catalog
    from facesocial.models.derived import import_keras_meso4
    from facesocial.models.store import ModelStore

    if kind != "meso4":
        err.print(f"[red]error[/red] unknown import kind '{kind}' (known: meso4)")
        raise typer.Exit(EXIT_USAGE)
    store = ModelStore(_settings(), Catalog.load())
    try:
        path = import_keras_meso4(store, model_id, h5)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    out.print(f"[green]ok[/green] wrote {path}")


# ----------------------------------------------------------------- analysis
@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="image files")],
    tasks: Annotated[str, typer.Option(help="comma list: detect,embed,antispoof,"
                                             "demographics,deepfake,objects or all")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
    draw: Annotated[Path | None, typer.Option(help="write annotated images here (a dir "
                                                   "for many inputs, or a file for one)")] = None,
    detector: Annotated[str | None, typer.Option()] = None,
    embedder: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Analyse images. Exits 3 if any input was bad (the others are still analysed)."""
    from facesocial.engine import parse_tasks

    try:
        task_list = parse_tasks(tasks)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    engine = _engine()
    failures = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), console=err, transient=True,
                  disable=len(paths) < 2) as bar:
        job = bar.add_task("analysing", total=len(paths))
        for path in paths:
            try:
                rgb = engine.image(path)
                result = engine.analyze(rgb, task_list, detector=detector, embedder=embedder)
            except InvalidInput as exc:
                failures += 1
                err.print(f"[red]error[/red] {escape(str(path))}: {_describe(exc)}")
                if as_json:
                    out.print_json(json.dumps({"file": str(path), "error": exc.to_dict()}))
                bar.advance(job)
                continue
            except ModelError as exc:
                raise _fail(exc) from None
            if as_json:
                sys.stdout.write(json.dumps({"file": str(path), **result.to_dict()}) + "\n")
            else:
                _print_analysis(path, result)
            if draw is not None:
                from facesocial.draw import save_annotated

                target = draw / f"{path.stem}.jpg" if (len(paths) > 1 or draw.is_dir()) else draw
                save_annotated(rgb, result, target)
            bar.advance(job)
    raise typer.Exit(EXIT_INPUT if failures else EXIT_OK)


def _print_analysis(path: Path, result: Any) -> None:
    out.print(f"[bold]{path}[/bold] {result.width}x{result.height}: "
              f"{len(result.faces)} face(s) in {result.timings_ms.get('total', 0):.0f} ms")
    for f in result.faces:
        parts = [f"#{f.index} box={[round(v) for v in f.box]} score={f.score:.2f}"]
        if f.liveness:
            parts.append(f"liveness={f.liveness.verdict}({f.liveness.live_score:.2f})")
        if f.demographics:
            parts.append(f"age={f.demographics.age:.0f} gender={f.demographics.gender}")
        if f.deepfake:
            parts.append(f"deepfake={'FAKE' if f.deepfake.is_fake else 'real'}"
                         f"({f.deepfake.fake_score:.2f})")
        if f.embedding:
            parts.append(f"embedding={f.embedding.model.id}")
        out.print("  " + " ".join(parts))
    if result.objects:
        labels = [f"{o.label}({o.score:.2f})" for o in result.objects.items]
        out.print("  objects: " + (", ".join(labels) or "none"))


@app.command()
def verify(
    a: Annotated[Path, typer.Argument()],
    b: Annotated[Path, typer.Argument()],
    embedder: Annotated[str | None, typer.Option()] = None,
    strict: Annotated[bool, typer.Option(help="use the strict (lower FMR) threshold")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """1:1 verification of the largest face in A against B. Exit 0 = match, 1 = no match."""
    engine = _engine()
    try:
        result = engine.verify(a, b, embedder=embedder, threshold="strict" if strict else "default")
    except FaceSocialError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    else:
        verdict = "[green]MATCH[/green]" if result.match else "[yellow]NO MATCH[/yellow]"
        fmr = result.false_match_rate
        out.print(f"{verdict} score={result.score:.3f} threshold={result.threshold:.3f} "
                  f"({result.threshold_name}) model={result.model.id}"
                  + (f" est. FMR at this score={fmr:.2g}" if fmr is not None else ""))
    raise typer.Exit(EXIT_OK if result.match else EXIT_NO_MATCH)


@app.command()
def video(
    path: Annotated[Path, typer.Argument(help="video file")],
    fps: Annotated[float | None, typer.Option(help="frames sampled per second")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Deepfake analysis of a video: per-frame scores and one verdict. Exit 1 = fake."""
    engine = _engine()
    try:
        result = engine.deepfake_video(path, sample_fps=fps)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    else:
        for fr in result.frames:
            score = "no face" if fr.fake_score is None else f"fake {fr.fake_score:.3f}"
            out.print(f"  t={fr.time_s:6.2f}s frame {fr.index:5d}: {fr.faces} face(s), {score}")
        out.print(f"[bold]{result.verdict}[/bold] mean fake score {result.fake_score} over "
                  f"{len(result.frames)} sampled frames ({result.sample_fps:g} fps)")
    raise typer.Exit(EXIT_NO_MATCH if result.verdict == "fake" else EXIT_OK)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default FACESOCIAL_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="default FACESOCIAL_PORT (8000)")] = None,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the HTTP service (uvicorn) on the embedded defaults or FACESOCIAL_* settings."""
    import uvicorn

    from facesocial.api.app import create_app
    from facesocial.observability.logging import configure_logging

    settings = _settings()
    configure_logging(log_level.upper())
    try:
        application = create_app(settings)
    except FaceSocialError as exc:
        raise _fail(exc) from None
    # base64 frames are 4/3 of the image; past this the WebSocket protocol closes with 1009
    ws_max = settings.ws_max_frame_bytes * 4 // 3 + 64 * 1024
    uvicorn.run(application, host=host or settings.host, port=port or settings.port,
                log_level=log_level, log_config=None, access_log=False, ws_max_size=ws_max)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(
        help="items at once (default FACESOCIAL_WORKER_CONCURRENCY, 2)")] = None,
    pool: Annotated[str | None, typer.Option(
        help="threads (default: one process, models loaded once), prefork or solo")] = None,
    log_level: Annotated[str, typer.Option()] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
) -> None:
    """Run a Celery worker for batch, video and gallery-import jobs (Redis broker).

    Needs FACESOCIAL_REDIS_URL (or FACESOCIAL_BROKER_URL), the API's database
    (FACESOCIAL_DATABASE_URL, or the same data dir for SQLite) and its spool directory.
    """
    from facesocial.jobs.celery_app import run_worker
    from facesocial.observability.logging import configure_logging

    if pool not in (None, "threads", "prefork", "solo"):
        err.print("[red]error[/red] --pool must be threads, prefork or solo")
        raise typer.Exit(EXIT_USAGE)
    configure_logging(log_level.upper())
    try:
        run_worker(_settings(), concurrency=concurrency, pool=pool, loglevel=log_level.upper(),
                   hostname=hostname)
    except FaceSocialError as exc:
        raise _fail(exc) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context,
          quick: Annotated[bool, typer.Option("--quick", help="small sizes, few repeats")] = False,
          ) -> None:
    """Run every benchmark under bench/ and write BENCHMARKS.md and plots (bench/results/).

    Needs a source checkout (the scripts live in bench/, not in the package) and the bench
    extras (`pip install -e .[bench]`). Other options go to bench/suite.py: --only, --skip,
    --model-home, --report, --report-only.
    """
    import subprocess

    suite = Path(__file__).resolve().parents[2] / "bench" / "suite.py"
    if not suite.is_file():
        err.print("[red]error[/red] bench/suite.py not found: run `facesocial bench` from a "
                  "source checkout (pip install -e .), or `python bench/suite.py` there")
        raise typer.Exit(EXIT_USAGE)
    argv = [sys.executable, str(suite), *(["--quick"] if quick else []), *ctx.args]
    raise typer.Exit(subprocess.call(argv, cwd=suite.parent.parent))


@app.command("users")
def users_create(
    action: Annotated[str, typer.Argument(help="create")],
    username: Annotated[str, typer.Argument()],
    admin: Annotated[bool, typer.Option("--admin", help="give the user the admin role")] = False,
    role: Annotated[str, typer.Option(help="admin, user or service")] = "user",
    password: Annotated[str | None, typer.Option(
        help="default: read FACESOCIAL_NEW_PASSWORD or prompt")] = None,
) -> None:
    """Create a user in the service's database (the first admin: `users create NAME --admin`)."""
    import os

    from facesocial.db.session import make_engine, session_factory, upgrade
    from facesocial.security.users import create_user

    if action != "create":
        err.print("[red]error[/red] only 'create' is supported")
        raise typer.Exit(EXIT_USAGE)
    settings = _settings()
    secret = password or os.environ.get("FACESOCIAL_NEW_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings)
    upgrade(db)
    try:
        with session_factory(db)() as session:
            user = create_user(session, username, secret, "admin" if admin else role)
            out.print(f"[green]created[/green] {user.username} ({user.role}) id={user.id}")
    except FaceSocialError as exc:
        raise _fail(exc) from None
    finally:
        db.dispose()


gallery_app = typer.Typer(help="Gallery maintenance.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("reindex")
def gallery_reindex(
    model: Annotated[str | None, typer.Option(help="the new embedding model (default: the "
                                                  "engine's current default)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Explain what changing the default embedding model means for the stored gallery.

    Embeddings of different models are never compared and images are never kept, so
    faces of any other model must be re-enrolled from their source images; this
    prints, per model, how many faces and identities that affects, and the steps.
    """
    from facesocial.db.session import make_engine, session_factory, upgrade
    from facesocial.engine import Engine
    from facesocial.gallery.service import Gallery

    settings = _settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        spec = Engine(settings).resolve("face_embedding", model or settings.embedder)
        db = make_engine(settings)
        upgrade(db)
        plan = Gallery(session_factory(db), settings).reindex_plan((spec.id, spec.version))
    except FaceSocialError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(plan.to_dict(), default=str))
    else:
        out.print(f"target embedding model: {spec.id} ({spec.version})")
        for m in plan.models:
            out.print(f"  {m.model_id} {m.model_version}: {m.faces} faces of {m.identities} "
                      f"identities -> {m.action}")
        for i, step in enumerate(plan.steps, 1):
            out.print(f"{i}. {step}")
    raise typer.Exit(EXIT_OK if plan.nothing_to_do else EXIT_NO_MATCH)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except FaceSocialError as exc:  # anything not caught by a command
        err.print(f"[red]error[/red] {_describe(exc)}")
        sys.exit(EXIT_MODEL if isinstance(exc, ModelError) else EXIT_INPUT)
