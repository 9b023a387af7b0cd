"""Accelerator devices the model manager can place models on.

* :class:`NvmlGpu`: a real CUDA card; free memory read through NVML
  (``nvidia-ml-py``), sessions created with ONNX Runtime's CUDA provider.
* :class:`SimulatedGpu`: a budget in settings and the real model sizes, with
  sessions actually running on CPU. It lets every placement, eviction and
  fallback path run (and be tested) on a machine without a GPU.

Without either, the manager runs everything on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class Device(Protocol):
    name: str  # "cuda:0" or "sim:0"
    simulated: bool

    def total_mb(self) -> float: ...
    def free_mb(self) -> float: ...
    def used_mb(self) -> float: ...
    def provider(self) -> str: ...


@dataclass
class SimulatedGpu:
    """A pretend device of ``budget_mb``; the manager's own accounting is its usage."""

    budget_mb: float
    name: str = "sim:0"
    simulated: bool = True
    _used: float = 0.0

    def total_mb(self) -> float:
        return self.budget_mb

    def free_mb(self) -> float:
        return self.budget_mb - self._used

    def used_mb(self) -> float:
        return self._used

    def charge(self, mb: float) -> None:
        self._used += mb

    def provider(self) -> str:
        return "CPUExecutionProvider"


class NvmlGpu:
    """A CUDA device, queried through NVML."""

    simulated = False

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.index = index
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = f"cuda:{index}"

    def _info(self) -> object:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle)

    def total_mb(self) -> float:
        return float(self._info().total) / MiB  # type: ignore[attr-defined]

    def free_mb(self) -> float:
        return float(self._info().free) / MiB  # type: ignore[attr-defined]

    def used_mb(self) -> float:
        return float(self._info().used) / MiB  # type: ignore[attr-defined]

    def provider(self) -> str:
        return "CUDAExecutionProvider"


def detect_device(mode: str, sim_budget_mb: float | None, index: int = 0) -> Device | None:
    """The device for ``mode``: "auto" (CUDA if usable), "cuda", "sim" or "cpu"."""
    if mode == "cpu":
        return None
    if mode == "sim":
        return SimulatedGpu(float(sim_budget_mb or 6144))
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        return NvmlGpu(index)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable GPU"
        if mode == "cuda":
            raise
        log.info("no GPU in use (%s); running on CPU", exc)
        return None
