"""Fold onnxruntime dynamic quantisation back into float weights.

A dynamically quantised graph computes ``DynamicQuantizeLinear(x)`` per call,
so an activation's int8 scale depends on every sample in the batch and a
face's embedding changes with its batch-mates. Rewriting each

    DynamicQuantizeLinear(x) -> ConvInteger(xq, wq, xzp, wzp) -> Cast -> Mul(scale)

chain as ``Conv(x, (wq - wzp) * w_scale)`` (and MatMulInteger as MatMul) gives
a float graph whose outputs are batch-independent and, on CPU, faster. The
weights keep their int8 grid; only the activation rounding goes away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLD_VERSION = "fold1"


def fold_dynamic_quantization(src: Path, dst: Path) -> int:
    """Write a float copy of ``src`` to ``dst``; returns the number of folded ops."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    remove: set[int] = set()
    new_nodes: dict[int, object] = {}
    new_inits = []
    folded = 0
    for node in graph.node:
        if node.op_type not in ("ConvInteger", "MatMulInteger"):
            continue
        xq, wq_name, _xzp, wzp_name = node.input[:4]
        dql = producers[xq]
        cast = consumers[node.output[0]][0]
        mul = consumers[cast.output[0]][0]
        scale_name = next(i for i in mul.input if i != cast.output[0])
        scales_mul = producers[scale_name]
        w_scale_name = next(i for i in scales_mul.input if i in inits)
        wq = numpy_helper.to_array(inits[wq_name]).astype(np.float32)
        wzp = numpy_helper.to_array(inits[wzp_name]).astype(np.float32)
        wsc = numpy_helper.to_array(inits[w_scale_name]).astype(np.float32)
        if node.op_type == "ConvInteger":
            shape = (-1,) + (1,) * (wq.ndim - 1)
            wf = (wq - wzp.reshape(shape) if wzp.ndim else wq - wzp) * (
                wsc.reshape(shape) if wsc.ndim else wsc)
            op = "Conv"
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        else:
            wf = (wq - wzp) * wsc
            op, attrs = "MatMul", {}
        wf_name = f"{wq_name}_folded"
        new_inits.append(numpy_helper.from_array(wf.astype(np.float32), wf_name))
        idx = list(graph.node).index(node)
        new_nodes[idx] = helper.make_node(op, [dql.input[0], wf_name], [mul.output[0]],
                                          name=f"{node.name}_folded", **attrs)
        for dead in (cast, mul, scales_mul):
            remove.add(list(graph.node).index(dead))
        folded += 1

    nodes = []
    for i, n in enumerate(graph.node):
        if i in remove:
            continue
        nodes.append(new_nodes.get(i, n))
    # drop DynamicQuantizeLinear nodes nobody reads any more
    used = {i for n in nodes for i in n.input}
    nodes = [n for n in nodes if not (n.op_type == "DynamicQuantizeLinear"
                                      and not any(o in used for o in n.output))]
    used = {i for n in nodes for i in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep + [i for i in new_inits if i.name in used])
    # the batch dimension is free in the float graph
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    onnx.checker.check_model(model)
    tmp = dst.with_suffix(dst.suffix + ".partial")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return folded
