"""Load-time ONNX graph patches declared in the catalog (``load_patch``).

A patch changes how a graph is shaped, never its weights, so outputs stay
those of the catalog file (the version stays the same); tests check equality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def free_batch(path: Path) -> bytes:
    """Serialized model whose batch-1 Reshape targets copy the batch dimension instead.

    The MiniFASNet exports reshape to ``[1, -1]`` before the classifier; with
    ``[0, -1]`` (0 = keep the input's dimension) the same graph takes any batch.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
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
    return model.SerializeToString()


PATCHES = {"free_batch": free_batch}
