"""Fixtures for the job tests: deployments per executor (see deployment.py), labelled photos."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.jobs.deployment import Deployment, deploy


@pytest.fixture(scope="module", params=["embedded", "celery"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               model_home: Path) -> Iterator[Deployment]:
    """One deployment per executor, shared by a module's tests that do not kill or restart."""
    dep = deploy(request.param, tmp_path_factory.mktemp(f"jobs-{request.param}"), model_home)
    yield dep
    dep.stop()


@pytest.fixture
def fresh_deployment(tmp_path: Path, model_home: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(executor: str, **extra: str) -> Deployment:
        dep = deploy(executor, tmp_path / f"dep{len(made)}", model_home, **extra)
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.stop()


@pytest.fixture(scope="session")
def face_photos(labels: dict, testdata: Path) -> list[tuple[str, bytes, int]]:
    """(file name, bytes, labelled face count) for every labelled face photo."""
    return [(Path(name).name, (testdata / name).read_bytes(), int(meta["faces"]))
            for name, meta in labels["faces"].items()]


