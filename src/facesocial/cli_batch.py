"""``facesocial batch``: submit a folder of images to a running service and collect results.

  facesocial batch submit DIR [--tasks detect,embed] [--out results.ndjson] [--import]
  facesocial batch status JOB_ID
  facesocial batch cancel JOB_ID

The folder's images are stored in a temporary zip (paths kept) and uploaded
as one archive; a progress bar follows the job; results are streamed as
NDJSON (one item per line) into ``--out``. With ``--import`` the folder is a
gallery import: each image's folder names its identity.

The service is ``--url`` (``FACESOCIAL_API_URL``, default http://127.0.0.1:8000),
authenticated with ``--api-key`` (``FACESOCIAL_API_KEY``) or ``--user`` and
``--password`` (``FACESOCIAL_API_USER`` / ``FACESOCIAL_API_PASSWORD``).

Exit codes: 0 every item done, 1 some items failed or the job was cancelled,
2 usage error, 3 the service refused the request or cannot be reached.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from facesocial.client import ApiError, FaceSocialClient, zip_folder

batch_app = typer.Typer(help="Batch jobs on a running service.", no_args_is_help=True)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
EXIT_OK, EXIT_ITEMS_FAILED, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3

Url = Annotated[str, typer.Option("--url", envvar="FACESOCIAL_API_URL",
                                  help="the service")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="FACESOCIAL_API_KEY")]
User = Annotated[str | None, typer.Option("--user", envvar="FACESOCIAL_API_USER")]
Password = Annotated[str | None, typer.Option("--password", envvar="FACESOCIAL_API_PASSWORD")]


def _client(url: str, api_key: str | None, user: str | None,
            password: str | None) -> FaceSocialClient:
    if api_key:
        return FaceSocialClient(url, api_key=api_key)
    if user and password:
        return FaceSocialClient.login(url, user, password)
    err.print("[red]error[/red] give --api-key, or --user and --password (or their "
              "FACESOCIAL_API_* variables)")
    raise typer.Exit(EXIT_USAGE)


def _service_error(exc: Exception) -> typer.Exit:
    if isinstance(exc, ApiError):
        err.print(f"[red]error[/red] {exc.status} {exc.code}: {exc.message}")
    else:
        err.print(f"[red]error[/red] the service cannot be reached: {exc}")
    return typer.Exit(EXIT_SERVICE)


@batch_app.command("submit")
def submit(
    folder: Annotated[Path, typer.Argument(help="folder of images (searched recursively)")],
    tasks: Annotated[str, typer.Option(help="detect, embed, antispoof, demographics, deepfake, "
                                            "objects, recognize")] = "detect,embed",
    out_file: Annotated[Path | None, typer.Option("--out", help="NDJSON results file "
                                                  "(default: DIR-results.ndjson)")] = None,
    gallery_import: Annotated[bool, typer.Option("--import", help="enrol the images: their "
                                                 "folder names the identity")] = False,
    wait: Annotated[bool, typer.Option(help="follow the job and write its results")] = True,
    url: Url = "http://127.0.0.1:8000", api_key: ApiKey = None, user: User = None,
    password: Password = None,
) -> None:
    """Submit every image under FOLDER as one job, show progress, write the results."""
    if not folder.is_dir():
        err.print(f"[red]error[/red] {folder} is not a folder")
        raise typer.Exit(EXIT_USAGE)
    target = out_file or folder.with_name(folder.name + "-results.ndjson")
    try:
        with _client(url, api_key, user, password) as client, \
                tempfile.TemporaryDirectory(prefix="facesocial-batch-") as tmp:
            archive = Path(tmp) / "images.zip"
            n = zip_folder(folder, archive)
            if n == 0:
                err.print(f"[red]error[/red] no images under {folder}")
                raise typer.Exit(EXIT_USAGE)
            job = (client.gallery_import(archive=archive) if gallery_import
                   else client.batch_submit(archive=archive, tasks=tasks))
            err.print(f"job {job['id']}: {job['total']} items ({job['executor']} executor)")
            if not wait:
                out.print(job["id"])
                raise typer.Exit(EXIT_OK)
            status = _follow(client, job)
            written = _write_results(client, job["id"], target)
    except (ApiError, httpx.HTTPError) as exc:
        raise _service_error(exc) from None
    c = status["counts"]
    out.print(f"{status['state']}: {c['done']} done, {c['failed']} failed, {c['cancelled']} "
              f"cancelled; {written} results in {target}")
    ok = status["state"] == "completed" and c["failed"] == 0
    raise typer.Exit(EXIT_OK if ok else EXIT_ITEMS_FAILED)


def _follow(client: FaceSocialClient, job: dict[str, Any]) -> dict[str, Any]:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task(job["kind"], total=job["total"], failed=0)

        def progress(status: dict[str, Any]) -> None:
            c = status["counts"]
            bar.update(task, completed=c["done"] + c["failed"] + c["cancelled"],
                       failed=c["failed"], description=f"{job['kind']} {status['state']}")

        return client.wait(job["id"], on_progress=progress)


def _write_results(client: FaceSocialClient, job_id: str, target: Path) -> int:
    n = 0
    with open(target, "w", encoding="utf-8") as f:
        for record in client.batch_stream(job_id):
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
            n += 1
    return n


def _show(call: Any, url: str, api_key: str | None, user: str | None,
          password: str | None) -> None:
    try:
        with _client(url, api_key, user, password) as client:
            out.print_json(json.dumps(call(client)))
    except (ApiError, httpx.HTTPError) as exc:
        raise _service_error(exc) from None


@batch_app.command("status")
def status(job_id: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKey = None,
           user: User = None, password: Password = None) -> None:
    """A job's state and counts as JSON."""
    _show(lambda c: c.batch_status(job_id), url, api_key, user, password)


@batch_app.command("cancel")
def cancel(job_id: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKey = None,
           user: User = None, password: Password = None) -> None:
    """Cancel a job: its pending items will not run."""
    _show(lambda c: c.batch_cancel(job_id), url, api_key, user, password)
