"""Load-time ONNX graph patches declared in the catalog (``load_patch``: one name or a list).

A patch changes how a graph is shaped, never its weights, so outputs stay
those of the catalog file (the version stays the same); tests check equality.
Each patch takes and returns an ``onnx.ModelProto``; :func:`apply` loads the file once,
applies the patches in order and serializes the result for ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def apply(path: Path, names: str | list[str]) -> bytes:
    import onnx

    model = onnx.load(str(path))
    for name in [names] if isinstance(names, str) else names:
        model = PATCHES[name](model)
    return model.SerializeToString()  # type: ignore[no-any-return]


def free_batch(model: Any) -> Any:
    """Serialized model whose batch-1 Reshape targets copy the batch dimension instead.

    The MiniFASNet exports reshape to ``[1, -1]`` before the classifier; with
    ``[0, -1]`` (0 = keep the input's dimension) the same graph takes any batch.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
            fixed = shape.copy()
            fixed[0] = 0
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array(fixed.astype(np.int64), node.input[1]))
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    return model


def prelu_as_max(model: Any) -> Any:
    """Serialized model with each PRelu whose slopes are all <= 1 written as Max(x, a * x).

    For slopes a <= 1 the two are the same function (x >= 0: a*x <= x; x < 0: a*x >= x),
    and the float results are identical. ONNX Runtime has no blocked-layout (NCHWc) PRelu
    on CPU, so it wraps every PRelu in layout copies; Mul and Max avoid them. Measured on the
    w600k MobileFaceNet (34 PRelu): 21.8 -> 15.4 ms per face, outputs bit-identical
    (bench/roofline.py profiles the PRelu share).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        slope = inits.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or float(numpy_helper.to_array(slope).max()) > 1.0:
            nodes.append(node)
            continue
        x, a = node.input
        y = node.output[0]
        nodes.append(helper.make_node("Mul", [x, a], [f"{y}__ax"], name=f"{node.name}__mul"))
        nodes.append(helper.make_node("Max", [x, f"{y}__ax"], [y], name=f"{node.name}__max"))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


PATCHES: dict[str, Callable[[Any], Any]] = {"free_batch": free_batch,
                                            "prelu_as_max": prelu_as_max}
