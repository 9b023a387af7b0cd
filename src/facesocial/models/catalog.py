"""The model catalog: what facesocial knows about every model, as data.

The catalog lives in ``catalog.json`` beside this module. This file only
parses it into typed, frozen records; no model-specific knowledge is written
here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from facesocial.errors import UnknownModel

TASKS = ("face_detection", "face_embedding", "anti_spoofing", "deepfake_detection",
         "object_detection", "demographics", "landmarks")


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # "url" | "archive" | "package" | "builtin"
    url: str | None = None
    member: str | None = None  # archive member
    package: str | None = None  # pip distribution name
    module: str | None = None  # importable module that carries the file
    path: str | None = None  # path inside the module or repository
    alternatives: tuple[dict[str, Any], ...] = ()
    derived_from: str | None = None  # derived models: the source model id
    transform: str | None = None  # derived models: how the file is made
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Calibrated decision thresholds for an embedding model (cosine similarity)."""

    default: float  # at the default false-match rate
    strict: float | None = None
    default_fmr: float | None = None
    strict_fmr: float | None = None
    calibration: str = ""
    # score -> estimated false-match rate, ascending scores
    fmr_curve: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    task: str
    family: str
    file: str | None
    sha256: str | None
    bytes: int
    source: Source
    license: str
    upstream: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    rank: int = 0  # higher = preferred among installed models of the same task
    thresholds: Thresholds | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Short, stable version tag: the catalog's explicit version (derived
        models), else the first 12 hex digits of the file's sha256."""
        explicit = self.extra.get("version")
        if explicit:
            return str(explicit)
        return (self.sha256 or "builtin")[:12]


def _parse(entry: dict[str, Any]) -> ModelSpec:
    src = dict(entry["source"])
    kind = src.pop("kind")
    source = Source(
        kind=kind,
        url=src.get("url"),
        member=src.get("member"),
        package=src.get("package"),
        module=src.get("module"),
        path=src.get("path"),
        alternatives=tuple(src.get("alternatives", ())),
        derived_from=src.get("from"),
        transform=src.get("transform"),
        raw=src,
    )
    thr = entry.get("thresholds")
    thresholds = None
    if thr:
        thresholds = Thresholds(
            default=float(thr["default"]),
            strict=thr.get("strict"),
            default_fmr=thr.get("default_fmr"),
            strict_fmr=thr.get("strict_fmr"),
            calibration=thr.get("calibration", ""),
            fmr_curve=tuple((float(s), float(r)) for s, r in thr.get("fmr_curve", ())),
        )
    known = {"id", "task", "family", "file", "sha256", "bytes", "source", "license", "upstream",
             "input", "output", "rank", "thresholds"}
    output = entry.get("output", "")
    return ModelSpec(
        id=entry["id"],
        task=entry["task"],
        family=entry["family"],
        file=entry.get("file"),
        sha256=entry.get("sha256"),
        bytes=int(entry.get("bytes") or 0),
        source=source,
        license=entry["license"],
        upstream=entry.get("upstream", ""),
        input=dict(entry.get("input") or {}),
        output=output if isinstance(output, str) else json.dumps(output),
        rank=int(entry.get("rank", 0)),
        thresholds=thresholds,
        extra={k: v for k, v in entry.items() if k not in known},
    )


class Catalog:
    """An immutable, ordered collection of :class:`ModelSpec`."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = {s.id: s for s in specs}
        if len(self._specs) != len(specs):
            raise ValueError("duplicate model ids in catalog")

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        if path is None:
            text = resources.files("facesocial.models").joinpath("catalog.json").read_text()
        else:
            text = Path(path).read_text()
        data = json.loads(text)
        return cls([_parse(e) for e in data["models"]])

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModel(f"unknown model '{model_id}'", model=model_id,
                               known=sorted(self._specs)) from None

    def by_task(self, task: str) -> list[ModelSpec]:
        """Models for a task, preferred first (higher rank)."""
        return sorted((s for s in self if s.task == task), key=lambda s: -s.rank)
