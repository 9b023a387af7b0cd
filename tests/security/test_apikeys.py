from __future__ import annotations

import re
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from facesocial.db.models import ApiKey
from facesocial.errors import ApiKeyInvalid, Forbidden, InsufficientScope, InvalidInput, NotFound
from facesocial.security.apikeys import (
    ApiKeyInfo,
    authenticate_api_key,
    create_api_key,
    list_api_keys,
    require_scope,
    revoke_api_key,
)


def test_create_shows_key_once_and_stores_hash(session) -> None:
    created = create_api_key(session, "ingest bot", ["face", "gallery"], created_by="u1")
    m = re.fullmatch(r"fsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})", created.key)
    assert m, created.key
    prefix, secret = m.groups()
    row = session.scalar(select(ApiKey))
    assert row.prefix == prefix == created.info.prefix
    assert row.key_hash.startswith("hmac-sha256$") and secret not in row.key_hash
    for col in ApiKey.__table__.columns:  # the secret is in no column
        assert secret not in str(getattr(row, col.key))
    assert row.scopes == ["face", "gallery"] and row.role == "service" and row.created_by == "u1"
    assert "key_hash" not in {f.name for f in fields(ApiKeyInfo)}


def test_authenticate(session) -> None:
    created = create_api_key(session, "bot", ["face"])
    row = authenticate_api_key(session, created.key)
    assert row.id == created.info.id and row.last_used_at is not None


def test_last_used_written_at_most_once_a_minute(session) -> None:
    created = create_api_key(session, "bot", ["face"])
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    authenticate_api_key(session, created.key, now=t0)
    authenticate_api_key(session, created.key, now=t0 + timedelta(seconds=30))
    session.expire_all()
    assert session.get(ApiKey, created.info.id).last_used_at.replace(tzinfo=UTC) == t0
    authenticate_api_key(session, created.key, now=t0 + timedelta(seconds=61))
    session.expire_all()
    assert session.get(ApiKey, created.info.id).last_used_at.replace(tzinfo=UTC) == \
        t0 + timedelta(seconds=61)


def test_bad_keys(session) -> None:
    created = create_api_key(session, "bot", ["face"])
    _, prefix, secret = created.key.split("_", 2)
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    for bad in (f"fsk_{prefix}_{other_secret}",  # wrong secret
                f"fsk_{'0' * 12}_{secret}",  # unknown prefix
                created.key[:-1],  # truncated
                "fsk_nothex_" + secret, "Bearer " + created.key, "", "x" * 500):
        with pytest.raises(ApiKeyInvalid) as exc:
            authenticate_api_key(session, bad)
        assert (exc.value.code, exc.value.subcode, exc.value.status) == \
            ("unauthorized", "api_key_invalid", 401)


def test_revoke(session) -> None:
    a = create_api_key(session, "a", ["face"])
    b = create_api_key(session, "b", ["*"])
    info = revoke_api_key(session, a.info.id)
    assert info.revoked_at is not None and not info.active
    with pytest.raises(ApiKeyInvalid):
        authenticate_api_key(session, a.key)
    authenticate_api_key(session, b.key)
    assert revoke_api_key(session, a.info.id).revoked_at == info.revoked_at  # idempotent
    with pytest.raises(NotFound):
        revoke_api_key(session, "missing")
    assert [k.name for k in list_api_keys(session)] == ["b"]
    assert sorted(k.name for k in list_api_keys(session, include_revoked=True)) == ["a", "b"]


def test_scopes(session) -> None:
    face = authenticate_api_key(session, create_api_key(session, "f", ["face", "batch"]).key)
    star = authenticate_api_key(session, create_api_key(session, "s", ["*"]).key)
    require_scope(face, "face")
    require_scope(face, "batch")
    with pytest.raises(InsufficientScope) as exc:
        require_scope(face, "gallery")
    assert isinstance(exc.value, Forbidden)
    assert exc.value.to_dict() == {"code": "forbidden", "subcode": "insufficient_scope",
                                   "message": "this API key lacks the 'gallery' scope",
                                   "details": {"scope": "gallery"}}
    with pytest.raises(InsufficientScope):
        require_scope(face, "admin")
    for scope in ("face", "gallery", "batch", "admin"):
        require_scope(star, scope)
    require_scope(["gallery"], "gallery")
    with pytest.raises(ValueError):
        require_scope(star, "nonsense")
    with pytest.raises(TypeError):
        require_scope("face", "face")  # type: ignore[arg-type]


def test_create_validation(session) -> None:
    with pytest.raises(InvalidInput):
        create_api_key(session, "x", ["face", "root"])
    with pytest.raises(InvalidInput):
        create_api_key(session, "x", [])
    with pytest.raises(InvalidInput):
        create_api_key(session, "  ", ["face"])
    with pytest.raises(InvalidInput):
        create_api_key(session, "x", ["face"], role="god")
    assert create_api_key(session, "x", ["face", "face"]).info.scopes == ["face"]
