"""The face gallery: enrolled identities, their embeddings, and 1:N search.

Use :class:`~facesocial.gallery.service.Gallery`; ``repository`` holds the SQL,
``index`` the in-process vector index, ``pgvector`` the PostgreSQL search.
"""

from facesocial.gallery.repository import AddOutcome, Page
from facesocial.gallery.service import (
    ConsistencyReport,
    EnrolItem,
    EnrolledFace,
    FaceInfo,
    FaceRecognition,
    Gallery,
    IdentityInfo,
    Match,
    Recognition,
    ReindexPlan,
)

__all__ = ["AddOutcome", "ConsistencyReport", "EnrolItem", "EnrolledFace", "FaceInfo",
           "FaceRecognition", "Gallery", "IdentityInfo", "Match", "Page", "Recognition",
           "ReindexPlan"]
