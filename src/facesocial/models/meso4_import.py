"""Write MesoNet Meso4 as ONNX from the authors' Keras h5 weights file.

The authors (DariusAf/MesoNet) publish weights only (``model.save_weights``):
an h5 with one group per layer, listed in order in the root attribute
``layer_names``, each group naming its datasets in ``weight_names``. There is
no model config in the file, so the architecture is written here, exactly as
``classifiers.Meso4`` builds it::

    Conv(8, 3x3, same)-ReLU-BN-MaxPool(2)
    Conv(8, 5x5, same)-ReLU-BN-MaxPool(2)
    Conv(16, 5x5, same)-ReLU-BN-MaxPool(2)
    Conv(16, 5x5, same)-ReLU-BN-MaxPool(4)
    Flatten (Keras NHWC order)-Dropout-Dense(16)-LeakyReLU(0.1)-Dropout-Dense(1)-sigmoid

Dropout is the identity at inference. The authors' pools are declared
``padding='same'``, but every feature map (256, 128, 64, 32) divides by its
pool size, so 'same' and 'valid' pooling give the same result. Convolutions
are stride 1, padded the way TensorFlow pads 'same' (the odd remainder of an
even kernel goes after, i.e. bottom/right). Batch norm uses the Keras default
epsilon, 1e-3.

The graph takes ``images`` [N, 3, 256, 256] float32 NCHW RGB in [0, 1] and
gives ``real_probability`` [N, 1]. Only ``h5py`` and ``onnx`` are needed (the
``import`` extra); TensorFlow is not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesocial.errors import InvalidInput

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "real_probability"
INPUT_SIZE = 256
BN_EPSILON = 1e-3
LEAKY_ALPHA = 0.1
OPSET = 17
IR_VERSION = 8  # loadable by every ONNX Runtime the project supports (>= 1.18)

# (kernel size, in channels, out channels, pool size) per conv block
CONV_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (3, 3, 8, 2),
    (5, 8, 8, 2),
    (5, 8, 16, 2),
    (5, 16, 16, 4),
)
FLAT_FEATURES = 8 * 8 * 16  # 256 / (2 * 2 * 2 * 4) = 8
DENSE_SHAPES: tuple[tuple[int, int], ...] = ((FLAT_FEATURES, 16), (16, 1))
BN_PARTS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True, slots=True)
class H5Layer:
    """One Keras layer with weights: its name and its arrays by short name."""

    name: str
    weights: dict[str, np.ndarray]


def _short_name(weight_name: str) -> str:
    """'conv2d_5/kernel:0' -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_layer(f: Any, name: str) -> H5Layer:
    """Read one layer group; its ``weight_names`` attribute lists the datasets."""
    if name not in f:
        raise InvalidInput(f"h5 lists layer '{name}' but has no group for it", layer=name)
    group = f[name]
    weights: dict[str, np.ndarray] = {}
    for wname in (_as_str(w) for w in group.attrs.get("weight_names", [])):
        if wname not in group:
            raise InvalidInput(f"h5 layer '{name}' is missing dataset '{wname}'", layer=name)
        weights[_short_name(wname)] = np.asarray(group[wname][()], dtype=np.float32)
    return H5Layer(name, weights)


def read_h5_layers(h5_path: Path) -> list[H5Layer]:
    """Layers that carry weights, in model order. Raises InvalidInput on a bad file."""
    import h5py

    try:
        with h5py.File(h5_path, "r") as f:
            # a full model.save() file keeps the weights one level down
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise InvalidInput(f"{h5_path} is not a Keras weights file (no 'layer_names')")
            names = [_as_str(n) for n in root.attrs["layer_names"]]
            layers = [_read_layer(root, n) for n in names]
    except InvalidInput:
        raise
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {h5_path}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InvalidInput(f"{h5_path} is not a readable Keras h5 file: {exc}") from None
    return [layer for layer in layers if layer.weights]


def _expect(layer: H5Layer, part: str, shape: tuple[int, ...]) -> np.ndarray:
    """The named array of a layer, checked for shape and finiteness."""
    if part not in layer.weights:
        raise InvalidInput(f"h5 layer '{layer.name}' has no '{part}' weights", layer=layer.name)
    arr = layer.weights[part]
    if arr.shape != shape:
        raise InvalidInput(f"h5 layer '{layer.name}' {part} has shape {arr.shape}, "
                           f"Meso4 expects {shape}", layer=layer.name)
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"h5 layer '{layer.name}' {part} holds NaN or infinite values",
                           layer=layer.name)
    return arr


def _check_layer_kinds(layers: list[H5Layer]) -> None:
    expected = ["conv", "bn"] * len(CONV_BLOCKS) + ["dense"] * len(DENSE_SHAPES)
    if len(layers) != len(expected):
        raise InvalidInput(f"h5 has {len(layers)} layers with weights; Meso4 has "
                           f"{len(expected)} (4 conv + 4 batch norm + 2 dense)")
    for layer, kind in zip(layers, expected, strict=True):
        got = "bn" if "gamma" in layer.weights or "moving_mean" in layer.weights else (
            "conv" if layer.weights.get("kernel", np.empty(0)).ndim == 4 else "dense")
        if got != kind:
            raise InvalidInput(f"h5 layer '{layer.name}' looks like {got}; Meso4 expects "
                               f"{kind} at this position", layer=layer.name)


def _tf_same_pads(kernel: int) -> list[int]:
    """ONNX pads [top, left, bottom, right] for TF 'same' at stride 1."""
    total = kernel - 1
    before = total // 2
    return [before, before, total - before, total - before]


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers for a sequential graph."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _conv_block(g: _GraphBuilder, x: str, conv: H5Layer, bn: H5Layer,
                block: tuple[int, int, int, int]) -> str:
    k, cin, cout, pool = block
    kernel = _expect(conv, "kernel", (k, k, cin, cout)).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    bias = _expect(conv, "bias", (cout,))
    x = g.node("Conv", [x, g.const(f"{conv.name}_w", kernel), g.const(f"{conv.name}_b", bias)],
               f"{conv.name}_o", kernel_shape=[k, k], pads=_tf_same_pads(k), strides=[1, 1])
    x = g.node("Relu", [x], f"{conv.name}_r")
    bn_inputs = [x] + [g.const(f"{bn.name}_{p}", _expect(bn, p, (cout,))) for p in BN_PARTS]
    x = g.node("BatchNormalization", bn_inputs, f"{bn.name}_o", epsilon=BN_EPSILON)
    return g.node("MaxPool", [x], f"{bn.name}_pool", kernel_shape=[pool, pool],
                  strides=[pool, pool])


def _head(g: _GraphBuilder, x: str, d1: H5Layer, d2: H5Layer) -> str:
    x = g.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])  # Keras flattens H, W, C
    x = g.node("Flatten", [x], "flat", axis=1)
    for layer, (fin, fout) in zip((d1, d2), DENSE_SHAPES, strict=True):
        w = g.const(f"{layer.name}_w", _expect(layer, "kernel", (fin, fout)))
        b = g.const(f"{layer.name}_b", _expect(layer, "bias", (fout,)))
        x = g.node("Gemm", [x, w, b], f"{layer.name}_o")
        if layer is d1:
            x = g.node("LeakyRelu", [x], f"{layer.name}_a", alpha=LEAKY_ALPHA)
    return g.node("Sigmoid", [x], OUTPUT_NAME)


def build_meso4(layers: list[H5Layer], doc: str = "") -> Any:
    """An ``onnx.ModelProto`` for Meso4 from the h5 layers (checked)."""
    from onnx import TensorProto, helper

    _check_layer_kinds(layers)
    g = _GraphBuilder()
    x = INPUT_NAME
    for i, block in enumerate(CONV_BLOCKS):
        x = _conv_block(g, x, layers[2 * i], layers[2 * i + 1], block)
    _head(g, x, layers[-2], layers[-1])
    graph = helper.make_graph(
        g.nodes, "meso4",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializer=g.initializers)
    model = helper.make_model(graph, producer_name="facesocial.meso4_import",
                              opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
    model.ir_version = IR_VERSION
    return model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(model: Any, out_path: Path) -> None:
    """Save next to ``out_path`` under a temporary name, then rename over it."""
    import onnx

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp",
                                    dir=out_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        onnx.checker.check_model(str(tmp), full_check=True)
        tmp.chmod(0o644)  # mkstemp makes it 0600; the model is not a secret
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def import_meso4(h5_path: Path, out_path: Path) -> None:
    """Write the Meso4 ONNX model for the authors' Keras weights at ``h5_path``.

    Raises :class:`facesocial.errors.InvalidInput` when the h5 is missing,
    unreadable, or does not hold Meso4 weights; no output file is left behind
    in that case. The output is written atomically.
    """
    h5_path, out_path = Path(h5_path), Path(out_path)
    layers = read_h5_layers(h5_path)
    doc = f"MesoNet Meso4 from {h5_path.name} (sha256 {_sha256(h5_path)})"
    model = build_meso4(layers, doc)
    _write_atomic(model, out_path)
    log.info("wrote %s from %s (%d layers with weights)", out_path, h5_path, len(layers))
