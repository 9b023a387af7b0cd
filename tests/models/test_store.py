"""Model store: pull from a mirror, checksum refusal, atomic writes, verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facesocial.errors import ChecksumMismatch, DownloadFailed, ModelNotInstalled, UnknownModel
from facesocial.models.catalog import Catalog
from facesocial.models.store import ModelStore, sha256_file
from facesocial.settings import Settings


def _store(tmp_path: Path) -> ModelStore:
    return ModelStore(Settings(model_dir=tmp_path / "home"), Catalog.load())


def test_catalog_lists_every_model_with_checksums(catalog: Catalog) -> None:
    ids = {s.id for s in catalog}
    for required in ("yunet", "scrfd_2.5g", "mobilefacenet", "antispoof_binary",
                     "antispoof_print_replay", "meso4_deepfake", "meso4_face2face", "yolox_nano",
                     "w600k_mbf_int8", "yolov8_face_lite_t", "dlib_age", "dlib_gender",
                     "dlib_hog", "dlib_shape5", "dlib_resnet", "w600k_r50", "glintr100",
                     "det_10g", "det_500m", "genderage", "w600k_mbf"):
        assert required in ids
    for spec in catalog:
        assert spec.license
        if spec.source.kind in ("url", "archive", "package"):
            assert spec.sha256 and len(spec.sha256) == 64, spec.id


def test_pull_from_mirror_installs_and_verifies(tmp_path: Path, mirror: Path) -> None:
    store = _store(tmp_path)
    states = store.pull(["yunet", "mobilefacenet"], mirror=mirror)
    assert [s.installed for s in states] == [True, True]
    assert sha256_file(store.path("yunet")) == store.catalog.get("yunet").sha256
    assert all(r.ok for r in store.verify(["yunet", "mobilefacenet"]))
    assert not any(p.name.endswith(".partial") for p in store.home.iterdir())


def test_corrupted_mirror_file_is_refused_and_leaves_nothing(tmp_path: Path,
                                                             mirror: Path) -> None:
    bad_mirror = tmp_path / "mirror"
    bad_mirror.mkdir()
    data = bytearray((mirror / "face_detection_yunet.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad_mirror / "face_detection_yunet.onnx").write_bytes(bytes(data))
    store = _store(tmp_path)
    with pytest.raises(ChecksumMismatch):
        store.pull(["yunet"], mirror=bad_mirror)
    assert not store.is_installed("yunet")
    assert list(store.home.iterdir()) == []


def test_missing_from_mirror_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DownloadFailed):
        _store(tmp_path).pull(["yunet"], mirror=empty)


def test_verify_detects_a_file_changed_after_install(tmp_path: Path, mirror: Path) -> None:
    store = _store(tmp_path)
    store.pull(["yunet"], mirror=mirror)
    path = store.path("yunet")
    path.write_bytes(path.read_bytes()[:-10])
    [result] = store.verify(["yunet"])
    assert not result.ok and "mismatch" in result.reason


def test_package_models_are_found_without_download(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for model_id in ("dlib_age", "dlib_gender", "dlib_shape5", "dlib_resnet", "dlib_shape68"):
        st = store.state(store.catalog.get(model_id))
        assert st.installed and st.where.startswith("package:"), model_id
        assert sha256_file(st.path) == st.spec.sha256


def test_unknown_and_uninstalled_models(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(UnknownModel):
        store.catalog.get("nope")
    with pytest.raises(ModelNotInstalled):
        store.path("yunet")


def test_int8_embedder_is_folded_on_pull_and_recorded(tmp_path: Path, mirror: Path) -> None:
    store = _store(tmp_path)
    store.pull(["w600k_mbf_int8"], mirror=mirror)
    st = store.state(store.catalog.get("w600k_mbf_folded"))
    assert st.installed and st.where == "derived"
    rec = store.derived()["w600k_mbf_folded"]
    assert rec["source_sha256"] == store.catalog.get("w600k_mbf_int8").sha256
    assert rec["sha256"] == sha256_file(st.path)
    assert all(r.ok for r in store.verify(["w600k_mbf_folded", "w600k_mbf_int8"]))


def test_archive_member_pull_over_loopback_http(tmp_path: Path, mirror: Path) -> None:
    """`pull` of a remote (zip archive) model: download, extract member, check, keep member."""
    import http.server
    import json
    import threading
    import zipfile

    # a catalog whose archive model points at a zip served on loopback
    serve = tmp_path / "www"
    serve.mkdir()
    member = mirror / "face_detection_yunet.onnx"
    with zipfile.ZipFile(serve / "pack.zip", "w") as zf:
        zf.write(member, "pack/face_detection_yunet.onnx")
        zf.writestr("pack/other.onnx", b"not wanted")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(serve), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/pack.zip"
        entry = {"id": "packed", "task": "face_detection", "family": "yunet",
                 "file": "face_detection_yunet.onnx", "sha256": sha256_file(member),
                 "bytes": member.stat().st_size, "license": "MIT",
                 "source": {"kind": "archive", "url": url, "member": "face_detection_yunet.onnx"}}
        cat_path = tmp_path / "catalog.json"
        cat_path.write_text(json.dumps({"models": [entry]}))
        store = ModelStore(Settings(model_dir=tmp_path / "home"), Catalog.load(cat_path))
        seen: list[int] = []
        store.pull(["packed"], progress=lambda _id, done, _total: seen.append(done))
        assert store.is_installed("packed") and seen
        assert sorted(p.name for p in store.home.iterdir()) == ["face_detection_yunet.onnx"]
        # a wrong checksum in the catalog is refused, nothing kept
        entry["sha256"] = "0" * 64
        cat_path.write_text(json.dumps({"models": [entry]}))
        store2 = ModelStore(Settings(model_dir=tmp_path / "home2"), Catalog.load(cat_path))
        with pytest.raises(ChecksumMismatch):
            store2.pull(["packed"])
        assert list((tmp_path / "home2").iterdir()) == []
    finally:
        httpd.shutdown()
        shutil.rmtree(serve)
