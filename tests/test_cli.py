"""The `facesocial` CLI: exit codes, JSON output, annotated images, model commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facesocial.cli import EXIT_INPUT, EXIT_MODEL, EXIT_NO_MATCH, EXIT_OK, app

runner = CliRunner()


@pytest.fixture()
def env(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACESOCIAL_MODEL_DIR", str(model_home))
    monkeypatch.setenv("FACESOCIAL_INTRA_OP_THREADS", "2")
    return model_home


def test_models_list_json(env: Path) -> None:
    res = runner.invoke(app, ["models", "list", "--json"])
    assert res.exit_code == EXIT_OK, res.output
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert rows["yunet"]["installed"] and rows["yunet"]["license"]
    assert not rows["glintr100"]["installed"]


def test_models_pull_and_verify_from_mirror(tmp_path: Path, mirror: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESOCIAL_MODEL_DIR", str(tmp_path / "home"))
    res = runner.invoke(app, ["models", "pull", "yunet", "--from", str(mirror)])
    assert res.exit_code == EXIT_OK, res.output
    assert runner.invoke(app, ["models", "verify", "yunet"]).exit_code == EXIT_OK
    (tmp_path / "home" / "face_detection_yunet.onnx").write_bytes(b"tampered")
    assert runner.invoke(app, ["models", "verify", "yunet"]).exit_code == EXIT_NO_MATCH


def test_pull_refuses_corrupt_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESOCIAL_MODEL_DIR", str(tmp_path / "home"))
    bad = tmp_path / "mirror"
    bad.mkdir()
    (bad / "face_detection_yunet.onnx").write_bytes(b"not the model")
    res = runner.invoke(app, ["models", "pull", "yunet", "--from", str(bad)])
    assert res.exit_code == EXIT_MODEL
    assert "checksum_mismatch" in res.output
    assert not (tmp_path / "home" / "face_detection_yunet.onnx").exists()


def test_import_meso4(tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESOCIAL_MODEL_DIR", str(tmp_path / "home"))
    res = runner.invoke(app, ["models", "import", "meso4", "--h5", str(mirror / "Meso4_DF.h5")])
    assert res.exit_code == EXIT_OK, res.output
    assert (tmp_path / "home" / "meso4_deepfake.onnx").is_file()
    assert runner.invoke(app, ["models", "verify", "meso4_deepfake"]).exit_code == EXIT_OK


def test_analyze_json_and_draw(env: Path, testdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "drawn"
    out.mkdir()
    res = runner.invoke(app, ["analyze", str(testdata / "faces/group_kit_rose.jpg"),
                              str(testdata / "liveness/print_attack.jpg"),
                              "--tasks", "detect,antispoof,demographics", "--json",
                              "--draw", str(out)])
    assert res.exit_code == EXIT_OK, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [d["face_count"] for d in lines] == [2, 1]
    assert lines[1]["faces"][0]["liveness"]["verdict"] == "print"
    assert sorted(p.name for p in out.iterdir()) == ["group_kit_rose.jpg", "print_attack.jpg"]


def test_analyze_bad_input_exit_code(env: Path, tmp_path: Path, testdata: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("just text")
    res = runner.invoke(app, ["analyze", str(bad), str(testdata / "faces/obama_1.jpg"),
                              "--tasks", "detect"])
    assert res.exit_code == EXIT_INPUT
    assert "unsupported_image_format" in res.output and "1 face" in res.output
    assert runner.invoke(app, ["analyze", str(bad), "--tasks", "fly"]).exit_code == EXIT_INPUT


def test_verify_exit_codes(env: Path, testdata: Path) -> None:
    same = runner.invoke(app, ["verify", str(testdata / "faces/obama_1.jpg"),
                               str(testdata / "faces/obama_2.jpg"), "--json"])
    assert same.exit_code == EXIT_OK, same.output
    body = json.loads(same.stdout)
    assert body["match"] and body["model"]["id"] == "w600k_mbf_folded"
    diff = runner.invoke(app, ["verify", str(testdata / "faces/obama_1.jpg"),
                               str(testdata / "faces/biden_1.jpg")])
    assert diff.exit_code == EXIT_NO_MATCH
    assert runner.invoke(app, ["verify", "a"]).exit_code == 2  # usage error


def test_models_status_warms_critical_models(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESOCIAL_DEVICE", "sim")
    res = runner.invoke(app, ["models", "status", "--load", "w600k_mbf_folded", "--json"])
    assert res.exit_code == EXIT_OK, res.output
    body = json.loads(res.stdout)
    st = {m["id"]: m for m in body["models"]}
    assert st["yunet"]["state"] == "loaded" and st["yunet"]["zone"] == "critical"
    assert st["antispoof_binary"]["device"] == "sim:0"
    assert st["w600k_mbf_folded"]["zone"] == "high" and st["w600k_mbf_folded"]["batched"]
    assert body["memory"]["zones"]["critical"]["used_mb"] > 0
