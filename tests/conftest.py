"""Shared fixtures: real models from the shared mirror, real labelled photos.

The mirror and test data live beside the repository in ``../shared`` (CI clones
the project next to it); ``FACESOCIAL_SHARED`` overrides the location.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facesocial.models.catalog import Catalog
from facesocial.models.store import ModelStore
from facesocial.runtime import LoadedModel, SessionFactory
from facesocial.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESOCIAL_SHARED", REPO.parent / "shared"))
MIRROR = SHARED / "models"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"test data not found at {TESTDATA}; set FACESOCIAL_SHARED")
    return TESTDATA


@pytest.fixture(scope="session")
def labels(testdata: Path) -> dict:
    return json.loads((testdata / "labels.json").read_text())


@pytest.fixture(scope="session")
def mirror() -> Path:
    return MIRROR


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    """A model home with every mirrored model pulled (and checked) through the store."""
    home = tmp_path_factory.mktemp("model_home")
    store = ModelStore(Settings(model_dir=home, model_mirror=MIRROR), catalog)
    store.pull(mirror=MIRROR)
    return home


@pytest.fixture(scope="session")
def settings(model_home: Path) -> Settings:
    # one thread per session: tests run two xdist workers on two cores
    return Settings(model_dir=model_home, model_mirror=None, intra_op_threads=1)


@pytest.fixture(scope="session")
def store(settings: Settings, catalog: Catalog) -> ModelStore:
    return ModelStore(settings, catalog)


@pytest.fixture(scope="session")
def load_model(settings: Settings, store: ModelStore, catalog: Catalog):
    """load_model(model_id) -> LoadedModel, cached for the session."""
    factory = SessionFactory(settings)
    cache: dict[str, LoadedModel] = {}

    def _load(model_id: str) -> LoadedModel:
        if model_id not in cache:
            cache[model_id] = factory.create(catalog.get(model_id), store.path(model_id))
        return cache[model_id]

    return _load
