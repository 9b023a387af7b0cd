"""Typed errors with stable codes, shared by the CLI and (later) the HTTP layer.

Every error a caller can cause carries a ``code`` that never changes between
releases and an HTTP-style ``status`` so the transport layer maps them in one
place. Internal failures are not wrapped here: they stay bugs.
"""

from __future__ import annotations

import math
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


class ExpectedOneFace(InvalidInput):
    """Enrolment needs exactly one face in each image."""

    code = "expected_one_face"
    status = 422


class LowQualityFace(InvalidInput):
    """The face is too small or too poor to enrol; details carry the reasons."""

    code = "low_quality_face"
    status = 422


class SpoofDetected(InvalidInput):
    """The anti-spoofing verdict refused the face."""

    code = "spoof_detected"
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


# --- HTTP boundary -------------------------------------------------------------
class MissingImage(InvalidInput):
    code = "missing_image"


class MalformedRequest(InvalidInput):
    code = "malformed_request"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"
    status = 415


# --- configuration -----------------------------------------------------------
class ConfigurationError(FaceSocialError):
    """The service refuses to start with these settings (e.g. the default secret in production)."""

    code = "configuration_error"
    status = 500


# --- authentication, authorisation, rate limits ------------------------------
class _SubcodedError(FaceSocialError):
    """An error whose stable ``code`` is shared by a family, told apart by ``subcode``."""

    subcode: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["subcode"] = self.subcode
        return out


class Unauthorized(_SubcodedError):
    """No valid credentials: the transport answers 401 (with ``WWW-Authenticate``)."""

    code = "unauthorized"
    status = 401
    subcode = "unauthorized"


class InvalidCredentials(Unauthorized):
    """Wrong username or password, unknown or disabled user: one answer for all, on purpose."""

    subcode = "invalid_credentials"


class TokenInvalid(Unauthorized):
    """Malformed token, bad signature, wrong secret, unknown refresh token."""

    subcode = "token_invalid"


class TokenWrongType(TokenInvalid):
    """A well-signed token of another type (e.g. not an access token)."""

    subcode = "token_wrong_type"


class TokenExpired(Unauthorized):
    subcode = "token_expired"


class TokenRevoked(Unauthorized):
    """A refresh token of a family that was logged out or revoked."""

    subcode = "token_revoked"


class TokenReused(TokenRevoked):
    """An already-rotated refresh token came back: its whole family has just been revoked."""

    subcode = "token_reused"


class ApiKeyInvalid(Unauthorized):
    """Unknown, malformed or revoked API key."""

    subcode = "api_key_invalid"


class Forbidden(_SubcodedError):
    """Authenticated but not allowed: 403."""

    code = "forbidden"
    status = 403
    subcode = "forbidden"


class InsufficientScope(Forbidden):
    subcode = "insufficient_scope"


class InsufficientRole(Forbidden):
    subcode = "insufficient_role"


class RateLimited(FaceSocialError):
    """Too many requests; ``retry_after`` (whole seconds, >= 1) is for ``Retry-After``."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        self.retry_after_s = max(0.0, float(retry_after))
        self.retry_after = max(1, math.ceil(self.retry_after_s))
        super().__init__(message, retry_after=self.retry_after, **details)


# --- resources (gallery, users) ------------------------------------------------
class NotFound(FaceSocialError):
    """A named resource (identity, face, ...) does not exist."""

    code = "not_found"
    status = 404


class Conflict(FaceSocialError):
    """The request conflicts with the current state of the stored data."""

    code = "conflict"
    status = 409


class NoGalleryForModel(Conflict):
    """The gallery holds no face embedded by the query's model id and version.

    Embeddings of different models are never compared; the details list which
    models the gallery does hold, so the caller can pick a matching embedder.
    """

    code = "no_gallery_for_model"


# --- jobs (batch, video, gallery import) ----------------------------------------
class InvalidArchive(InvalidInput):
    """The uploaded zip cannot be read, or holds no usable entries."""

    code = "invalid_archive"


class EmptyBatch(InvalidInput):
    code = "empty_batch"


class TooManyItems(InvalidInput):
    code = "too_many_items"
    status = 413


class MissingIdentityName(InvalidInput):
    """A gallery import entry has neither a folder name nor an ``identity`` field."""

    code = "missing_identity_name"


class JobFinished(Conflict):
    """The job already ended; it cannot be cancelled."""

    code = "job_finished"


class QueueUnavailable(FaceSocialError):
    """The job queue (broker) cannot be reached; nothing was queued."""

    code = "queue_unavailable"
    status = 503


class InputMissing(FaceSocialError):
    """A job item's spooled input is gone (removed, or the spool is not shared)."""

    code = "input_missing"
    status = 410


# --- realtime streams and sessions ----------------------------------------------
class SystemFull(FaceSocialError):
    """Every session place is taken and none came free within the queue timeout."""

    code = "system_full"
    status = 503


class ClientBlocked(Forbidden):
    """The session client is blocked (by the policy or an administrator)."""

    subcode = "client_blocked"
