"""Column types that differ between SQLite (embedded) and PostgreSQL (+ pgvector)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import JSON, LargeBinary
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class Embedding(TypeDecorator[np.ndarray]):
    """A float32 vector: raw bytes on SQLite, an (untyped) pgvector ``vector`` on PostgreSQL.

    The PostgreSQL column has no fixed dimension because galleries hold
    embeddings of several models (128-d, 512-d); HNSW indexes are partial
    expression indexes per model with a cast to ``vector(dim)``.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector

            return dialect.type_descriptor(Vector())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if dialect.name == "postgresql":
            return arr
        return arr.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(value), dtype=np.float32).copy()
        return np.asarray(value, dtype=np.float32)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
