"""Meso4 Keras h5 -> ONNX import: equal to the shipped ONNX, atomic, strict on bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from facesocial.errors import InvalidInput  # noqa: E402
from facesocial.models.meso4_import import import_meso4  # noqa: E402
from facesocial.vision.image import load_image  # noqa: E402

PAIRS = [("Meso4_DF.h5", "meso4_deepfake.onnx"), ("Meso4_F2F.h5", "meso4_face2face.onnx")]


@pytest.fixture(scope="module")
def deepfake_batch(testdata: Path, labels: dict) -> np.ndarray:
    """Every deepfake test image, whole, resized to 256x256: (n, 3, 256, 256) float32."""
    import cv2

    names = sorted(k for k in labels["deepfake"])
    assert len(names) >= 4
    imgs = [cv2.resize(load_image(testdata / n).rgb, (256, 256), interpolation=cv2.INTER_LINEAR)
            for n in names]
    return np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("h5_name", "onnx_name"), PAIRS)
def test_import_equals_shipped_onnx(h5_name: str, onnx_name: str, mirror: Path, tmp_path: Path,
                                    deepfake_batch: np.ndarray) -> None:
    out = tmp_path / "sub" / onnx_name
    import_meso4(mirror / h5_name, out)

    assert out.is_file() and _no_temp_files(out.parent)
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "images" and outp.name == "real_probability"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3, 256, 256]

    mine, ref = _run(out, deepfake_batch), _run(mirror / onnx_name, deepfake_batch)
    assert mine.shape == ref.shape == (len(deepfake_batch), 1)
    assert np.max(np.abs(mine - ref)) <= 1e-5


def test_import_overwrites_atomically(mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "meso4.onnx"
    out.write_bytes(b"old")
    import_meso4(mirror / "Meso4_DF.h5", out)
    assert out.stat().st_size > 100_000 and _no_temp_files(tmp_path)


def _bad_h5(kind: str, src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    if kind == "garbage":
        dst.write_bytes(os.urandom(4096))
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "truncated":
        dst.write_bytes(data[: len(data) // 2])
    else:
        shutil.copyfile(src, dst)
        with h5py.File(dst, "a") as f:
            if kind == "missing_dataset":
                del f["conv2d_7/conv2d_7/kernel:0"]
            elif kind == "wrong_shape":
                del f["dense_3/dense_3/kernel:0"]
                f["dense_3/dense_3"].create_dataset("kernel:0", data=np.zeros((512, 16), "f4"))
            elif kind == "not_keras":
                del f.attrs["layer_names"]
    return dst


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "missing_dataset",
                                  "wrong_shape", "not_keras"])
def test_bad_h5_raises_and_writes_nothing(kind: str, mirror: Path, tmp_path: Path) -> None:
    bad = _bad_h5(kind, mirror / "Meso4_DF.h5", tmp_path / "bad.h5")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "meso4.onnx"
    with pytest.raises(InvalidInput) as err:
        import_meso4(bad, out)
    assert str(bad) in err.value.message or "layer" in err.value.message
    assert not out.exists() and list(out_dir.iterdir()) == []


def test_bad_h5_keeps_existing_output(mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "meso4.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(InvalidInput):
        import_meso4(_bad_h5("truncated", mirror / "Meso4_DF.h5", tmp_path / "bad.h5"), out)
    assert out.read_bytes() == b"previous model" and _no_temp_files(tmp_path)


def test_missing_h5_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        import_meso4(tmp_path / "nope.h5", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
