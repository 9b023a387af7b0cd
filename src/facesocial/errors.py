"""Typed errors with stable codes, shared by the CLI and (later) the HTTP layer.

Every error a caller can cause carries a ``code`` that never changes between
releases and an HTTP-style ``status`` so the transport layer maps them in one
place. Internal failures are not wrapped here: they stay bugs.
"""

from __future__ import annotations

from typing import Any


class FaceSocialError(Exception):
    """Root of every error facesocial raises on purpose."""

    code: str = "facesocial_error"
    status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# --- input -------------------------------------------------------------------
class InvalidInput(FaceSocialError):
    code = "invalid_input"
    status = 400


class InvalidImage(InvalidInput):
    code = "invalid_image"


class EmptyImage(InvalidImage):
    code = "empty_image"


class UnsupportedImageFormat(InvalidImage):
    code = "unsupported_image_format"
    status = 415


class TruncatedImage(InvalidImage):
    code = "truncated_image"


class ImageTooLarge(InvalidImage):
    code = "image_too_large"
    status = 413


class ImageTooSmall(InvalidImage):
    code = "image_too_small"


class InvalidVideo(InvalidInput):
    code = "invalid_video"


class NoFaceFound(InvalidInput):
    code = "no_face_found"
    status = 422


class UnknownTask(InvalidInput):
    code = "unknown_task"


# --- models ------------------------------------------------------------------
class ModelError(FaceSocialError):
    code = "model_error"
    status = 500


class UnknownModel(ModelError):
    code = "unknown_model"
    status = 404


class ModelNotInstalled(ModelError):
    code = "model_not_installed"
    status = 503


class ChecksumMismatch(ModelError):
    code = "checksum_mismatch"
    status = 502


class DownloadFailed(ModelError):
    code = "download_failed"
    status = 502


class ModelLoadFailed(ModelError):
    code = "model_load_failed"
    status = 500


class IncompatibleEmbeddings(InvalidInput):
    code = "incompatible_embeddings"
    status = 409
