"""Derived model files: made locally from a verified source, then recorded.

Two kinds exist: ``w600k_mbf_folded`` (the int8 embedder de-quantised, see
:mod:`facesocial.models.fold_int8`) and ONNX files imported from upstream
Keras weights (``models import meso4``). Each derived file is recorded in the
model home's ``derived.json`` with its own sha256 and its source's, so
``models verify`` can re-check both.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from facesocial.errors import ChecksumMismatch, InvalidInput
from facesocial.models.store import DERIVED_REGISTRY, ModelStore, sha256_file

log = logging.getLogger(__name__)



def record(store: ModelStore, model_id: str, file: Path, source_sha256: str,
           how: str) -> dict[str, Any]:
    home = store.home
    reg = store.derived()
    reg[model_id] = {"file": file.name, "sha256": sha256_file(file),
                     "source_sha256": source_sha256, "transform": how}
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".derived.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(reg, f, indent=1)
    os.replace(tmp, home / DERIVED_REGISTRY)
    return reg[model_id]


def ensure_derived(store: ModelStore) -> list[str]:
    """Make every derived model whose source is installed and which is missing."""
    from facesocial.models.fold_int8 import fold_dynamic_quantization

    notes = []
    for spec in store.catalog:
        if spec.source.kind != "derived" or spec.source.transform != "fold_int8":
            continue
        if store.state(spec).installed or not store.is_installed(str(spec.source.derived_from)):
            continue
        src_spec = store.catalog.get(str(spec.source.derived_from))
        src_path = store.path(src_spec.id)
        if sha256_file(src_path) != src_spec.sha256:
            raise ChecksumMismatch(f"source of '{spec.id}' fails its checksum", model=src_spec.id)
        dst = store.home / str(spec.file)
        n = fold_dynamic_quantization(src_path, dst)
        rec = record(store, spec.id, dst, str(src_spec.sha256), f"fold_int8 ({n} ops)")
        notes.append(f"{spec.id} from {src_spec.id}: {n} ops folded, sha256 {rec['sha256'][:12]}")
    return notes


def import_keras_meso4(store: ModelStore, model_id: str, h5: Path) -> Path:
    """Write ``model_id``'s ONNX file from the authors' Keras h5 and record it."""
    from facesocial.models.meso4_import import import_meso4

    spec = store.catalog.get(model_id)
    if spec.family != "meso4":
        raise InvalidInput(f"'{model_id}' is not a Meso4 model", model=model_id)
    if not Path(h5).is_file():
        raise InvalidInput(f"no such file: {h5}")
    h5_sha = sha256_file(Path(h5))
    expected = (spec.extra.get("keras_source") or {}).get("sha256")
    if expected and h5_sha != expected:
        log.warning("h5 %s is not the catalog's %s weights (sha256 differs)", h5, model_id)
    store.home.mkdir(parents=True, exist_ok=True)
    dst = store.home / str(spec.file)
    import_meso4(Path(h5), dst)
    record(store, model_id, dst, h5_sha, "keras_h5_import")
    return dst
