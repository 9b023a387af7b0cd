"""Synthetic embeddings with controlled similarities, for gallery tests."""

from __future__ import annotations

import hashlib

import numpy as np

from facesocial.gallery import EnrolItem
from facesocial.results import Embedding
from facesocial.runtime import ModelRef

DIM = 64
MODEL = ModelRef("synthetic_a", "v1")
MODEL_B = ModelRef("synthetic_b", "v1")
THRESHOLD = 0.5


def unit(rng: np.random.Generator, dim: int = DIM, n: int | None = None) -> np.ndarray:
    x = rng.normal(size=(n or 1, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x if n else x[0]


def near(rng: np.random.Generator, center: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at exactly cosine ``cos`` from the unit vector ``center``."""
    u = rng.normal(size=center.shape).astype(np.float32)
    u -= u.dot(center) * center
    u /= np.linalg.norm(u)
    return (cos * center + np.sqrt(1 - cos * cos) * u).astype(np.float32)


def sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def item(vec: np.ndarray, source: str, model: ModelRef = MODEL,
         quality: float | None = 0.9) -> EnrolItem:
    return EnrolItem(Embedding(np.asarray(vec, np.float32), model), sha(source), quality)


def emb(vec: np.ndarray, model: ModelRef = MODEL) -> Embedding:
    return Embedding(np.asarray(vec, np.float32), model)
