"""Helpers shared by the benchmark scripts: number formatting, markdown tables, machine facts."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any


def fmt(x: float | None, nd: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_run_header(info: dict[str, Any], command: str) -> None:
    """The machine, date, versions and command lines every report starts with."""
    print(f"- machine: {info['cpu']}, {info['cores_usable']} usable cores "
          f"({info['cores_online']} online); load average at start "
          f"{', '.join(f'{x:.2f}' for x in info['loadavg_start'])}")
    print(f"- date: {info['date_utc']}")
    print("- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f", Python {info['python']}")
    print(f"- command: `{command}`")


def machine_info(command: str, dists: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Machine facts, date and the versions of ``dists`` ((distribution, module) pairs)."""

    def version(dist: str, mod: str) -> str:
        try:  # the installed distribution's version (face_recognition 1.3.0 says 1.2.3)
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
        try:
            return str(getattr(importlib.import_module(mod), "__version__", "?"))
        except Exception:  # noqa: BLE001 - report what is there
            return "not installed"

    return {
        "cpu": cpu_model(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": list(os.getloadavg()),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "versions": {dist: version(dist, mod) for dist, mod in dists},
        "command": command,
    }


def model_home(path: str | None, shared: Path | None = None) -> Path:
    """``path``, or a temporary model home pulled (and checked) from the shared mirror."""
    import tempfile

    if path:
        return Path(path)
    from facesocial.models.catalog import Catalog
    from facesocial.models.store import ModelStore
    from facesocial.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="fs-bench-models-"))
    mirror = (shared or Path(__file__).resolve().parents[2] / "shared") / "models"
    ModelStore(Settings(model_dir=home, model_mirror=mirror), Catalog.load()).pull(mirror=mirror)
    return home
