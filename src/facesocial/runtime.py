"""ONNX Runtime sessions: the only module that constructs them.

Providers and thread counts come from settings; providers that this build of
ONNX Runtime does not offer are skipped. A loaded model is a
:class:`LoadedModel`: the session plus the catalog spec and the device it
really runs on, so every result can name its model id, version and device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facesocial.errors import ModelLoadFailed
from facesocial.models.catalog import ModelSpec
from facesocial.settings import Settings

log = logging.getLogger(__name__)


class Session(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the adapters use."""

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> list[Any]: ...
    def get_inputs(self) -> list[Any]: ...
    def get_outputs(self) -> list[Any]: ...
    def get_providers(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model made a result: id, version (sha256 prefix) and device."""

    id: str
    version: str
    device: str = "cpu"

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "version": self.version, "device": self.device}


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    session: Session
    path: Path
    device: str
    version: str = ""  # of the file actually loaded; defaults to the catalog's

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.spec.id, self.version or self.spec.version, self.device)

    @property
    def input_name(self) -> str:
        return str(self.session.get_inputs()[0].name)

    def run(self, feed: dict[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
        if isinstance(feed, np.ndarray):
            feed = {self.input_name: feed}
        return self.session.run(None, feed)


def _device_of(providers: list[str]) -> str:
    first = providers[0] if providers else "CPUExecutionProvider"
    return {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}.get(
        first, "cpu")


class SessionFactory:
    """Builds ONNX Runtime sessions from settings (stateless, so thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def providers(self, device: str | None = None) -> list[str]:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        wanted = list(self.settings.providers)
        if device == "cpu":
            wanted = ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        return chosen

    def create(self, spec: ModelSpec, path: Path, device: str | None = None,
               provider_options: dict[str, dict[str, Any]] | None = None) -> LoadedModel:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.settings.intra_op_threads:
            opts.intra_op_num_threads = self.settings.intra_op_threads
        if self.settings.inter_op_threads:
            opts.inter_op_num_threads = self.settings.inter_op_threads
        if not self.settings.intra_op_spinning:
            # idle intra-op threads sleep instead of spinning: with several requests or
            # sessions at once the spinning threads take the CPU the others need
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: shape warnings from re-exported graphs
        providers = self.providers(device)
        prov_args: list[Any] = []
        for p in providers:
            o = (provider_options or {}).get(p)
            if p == "CUDAExecutionProvider" and o is None:
                o = {"arena_extend_strategy": "kSameAsRequested"}
            prov_args.append((p, o) if o else p)
        source: str | bytes = str(path)
        patch = spec.extra.get("load_patch")
        if patch:
            from facesocial.models.graph_patches import apply

            source = apply(path, patch)
        try:
            session = ort.InferenceSession(source, sess_options=opts, providers=prov_args)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadFailed(f"could not load model '{spec.id}' from {path}: {exc}",
                                  model=spec.id) from exc
        used = session.get_providers()
        log.debug("loaded %s on %s", spec.id, used)
        return LoadedModel(spec=spec, session=session, path=path, device=_device_of(used))
