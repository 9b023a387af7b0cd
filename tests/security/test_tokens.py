from __future__ import annotations

import base64
import hashlib
import json
import logging

import jwt
import pytest
from sqlalchemy import select

from facesocial.db.models import RefreshToken
from facesocial.errors import (
    ConfigurationError,
    InvalidCredentials,
    TokenExpired,
    TokenInvalid,
    TokenReused,
    TokenRevoked,
    TokenWrongType,
    Unauthorized,
)
from facesocial.security.tokens import TokenService, check_secret
from facesocial.security.users import create_user, deactivate_user
from facesocial.settings import DEFAULT_SECRET, Settings

from .conftest import SECRET, FakeClock


@pytest.fixture
def user(session, passwords):
    return create_user(session, "alice", "alice-password", "user", passwords=passwords)


@pytest.fixture
def svc(sec_settings, clock) -> TokenService:
    return TokenService(sec_settings, clock=clock)


def _claims(**over):
    base = {"iss": "facesocial", "sub": "u1", "role": "user", "type": "access",
            "iat": 1_700_000_000, "exp": 1_700_000_900, "jti": "j1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


# --- secret ---------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", [DEFAULT_SECRET, "x" * 31, "é" * 15])
def test_production_refuses_weak_secret(secret) -> None:
    s = Settings(env="production", secret_key=secret)
    with pytest.raises(ConfigurationError) as exc:
        check_secret(s)
    assert exc.value.code == "configuration_error"
    with pytest.raises(ConfigurationError):
        TokenService(s)


def test_production_accepts_strong_secret() -> None:
    check_secret(Settings(env="production", secret_key="k" * 32))
    TokenService(Settings(env="production", secret_key=SECRET))


def test_development_default_secret_only_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="facesocial.security.tokens"):
        check_secret(Settings(env="development"))
    assert "built-in default" in caplog.text


# --- access tokens --------------------------------------------------------------------------
def test_access_token_roundtrip(svc: TokenService, clock: FakeClock) -> None:
    tok = svc.issue_access("u1", "admin")
    c = svc.decode_access(tok)
    assert (c.sub, c.role) == ("u1", "admin")
    assert c.iat == int(clock.t) and c.exp - c.iat == 900
    assert c.raw["type"] == "access" and jwt.get_unverified_header(tok)["alg"] == "HS256"
    assert svc.decode_access(svc.issue_access("u1", "admin")).jti != c.jti


def test_access_token_expiry_uses_injected_clock(svc: TokenService, clock: FakeClock) -> None:
    tok = svc.issue_access("u1", "user")
    clock.advance(899)
    svc.decode_access(tok)
    clock.advance(1)
    with pytest.raises(TokenExpired) as exc:
        svc.decode_access(tok)
    assert (exc.value.code, exc.value.subcode, exc.value.status) == \
        ("unauthorized", "token_expired", 401)


def test_token_from_the_future_is_invalid(svc: TokenService, clock: FakeClock) -> None:
    tok = svc.issue_access("u1", "user")
    clock.advance(-3600)
    with pytest.raises(TokenInvalid):
        svc.decode_access(tok)


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_tampered_tokens_are_invalid(svc: TokenService) -> None:
    tok = svc.issue_access("u1", "user")
    head, payload, sig = tok.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    forged_payload = _b64({**jwt.decode(tok, options={"verify_signature": False}),
                           "role": "admin"})
    for bad in (f"{head}.{payload}.{flipped}", f"{head}.{forged_payload}.{sig}",
                f"{head}.{payload}.", "not-a-jwt", "", "a.b.c", "x" * 5000):
        with pytest.raises(TokenInvalid) as exc:
            svc.decode_access(bad)
        assert exc.value.subcode == "token_invalid"


def test_wrong_secret_is_invalid(svc: TokenService, clock: FakeClock) -> None:
    other = TokenService(Settings(secret_key="another-secret-that-is-long-enough-0123"),
                         clock=clock)
    with pytest.raises(TokenInvalid):
        svc.decode_access(other.issue_access("u1", "admin"))


def test_forged_expired_token_reports_invalid_not_expired(svc: TokenService,
                                                          clock: FakeClock) -> None:
    forged = jwt.encode(_claims(exp=1), "wrong-secret-wrong-secret-wrong-secret", "HS256")
    with pytest.raises(TokenInvalid):
        svc.decode_access(forged)


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # HS512 with a 49-byte key
def test_alg_none_and_other_algorithms_rejected(svc: TokenService) -> None:
    none_tok = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(TokenInvalid):
        svc.decode_access(none_tok)
    hs512 = jwt.encode(_claims(), SECRET, algorithm="HS512")
    with pytest.raises(TokenInvalid):
        svc.decode_access(hs512)


def test_wrong_type(svc: TokenService) -> None:
    tok = jwt.encode(_claims(type="refresh"), SECRET, algorithm="HS256")
    with pytest.raises(TokenWrongType) as exc:
        svc.decode_access(tok)
    assert exc.value.subcode == "token_wrong_type"
    assert isinstance(exc.value, TokenInvalid) and exc.value.status == 401


@pytest.mark.parametrize("over", [
    {"jti": None}, {"sub": None}, {"type": None}, {"exp": None}, {"iss": "someone-else"},
    {"exp": "1700000900"}, {"sub": 5},
])
def test_missing_or_bad_claims(svc: TokenService, over) -> None:
    tok = jwt.encode(_claims(**over), SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid):
        svc.decode_access(tok)


# --- refresh tokens -------------------------------------------------------------------------
def _row(session, token: str) -> RefreshToken:
    h = hashlib.sha256(token.encode()).hexdigest()
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == h))


def test_issue_pair_stores_only_the_hash(session, svc: TokenService, user) -> None:
    pair = svc.issue_pair(session, user)
    assert len(pair.refresh_token) >= 43 and pair.token_type == "bearer"
    assert pair.expires_in == 900 and pair.refresh_expires_in == 3600
    rows = session.scalars(select(RefreshToken)).all()
    assert len(rows) == 1
    assert rows[0].token_hash == hashlib.sha256(pair.refresh_token.encode()).hexdigest()
    assert rows[0].family == pair.family and rows[0].revoked_at is None
    assert svc.decode_access(pair.access_token).sub == user.id


def test_rotation(session, svc: TokenService, user, clock: FakeClock) -> None:
    p1 = svc.issue_pair(session, user)
    clock.advance(10)
    p2 = svc.rotate(session, p1.refresh_token)
    assert p2.refresh_token != p1.refresh_token and p2.family == p1.family
    assert svc.decode_access(p2.access_token).sub == user.id
    assert _row(session, p1.refresh_token).revoked_at is not None
    assert _row(session, p2.refresh_token).revoked_at is None
    p3 = svc.rotate(session, p2.refresh_token)
    assert p3.family == p1.family
    assert session.scalars(select(RefreshToken)).all().__len__() == 3


def test_reuse_revokes_the_whole_family(session, make_session, svc: TokenService, user,
                                        caplog) -> None:
    p1 = svc.issue_pair(session, user)
    other_login = svc.issue_pair(session, user)
    p2 = svc.rotate(session, p1.refresh_token)  # the legitimate client rotates
    with caplog.at_level(logging.WARNING, logger="facesocial.security.tokens"):
        with pytest.raises(TokenReused) as exc:  # the stolen copy of p1 comes back
            svc.rotate(session, p1.refresh_token)
    assert exc.value.subcode == "token_reused" and exc.value.status == 401
    assert "reuse detected" in caplog.text
    session.rollback()  # the request fails; the revocation must already be committed
    with make_session() as fresh:
        fam = fresh.scalars(select(RefreshToken).where(RefreshToken.family == p1.family)).all()
        assert len(fam) == 2 and all(r.revoked_at is not None for r in fam)
        assert _row(fresh, other_login.refresh_token).revoked_at is None  # other login untouched
    with pytest.raises(TokenRevoked):  # the legitimate newest token is dead too
        svc.rotate(session, p2.refresh_token)
    with pytest.raises(TokenRevoked):
        svc.rotate(session, p1.refresh_token)
    svc.rotate(session, other_login.refresh_token)


def test_concurrent_rotation_of_one_token_is_reuse(session, make_session, svc: TokenService,
                                                   user, monkeypatch) -> None:
    """Two requests race with the same token: only one may win; the loser is reuse."""
    p1 = svc.issue_pair(session, user)
    winner: dict = {}
    real_get = session.get

    def racing_get(*args, **kwargs):  # runs between rotate()'s read and its conditional update
        if not winner:
            with make_session() as other:
                winner["pair"] = svc.rotate(other, p1.refresh_token)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(session, "get", racing_get)
    with pytest.raises(TokenReused):
        svc.rotate(session, p1.refresh_token)
    monkeypatch.undo()
    with pytest.raises(TokenRevoked):
        svc.rotate(session, winner["pair"].refresh_token)


def test_logout_revokes_family(session, svc: TokenService, user) -> None:
    p1 = svc.issue_pair(session, user)
    other = svc.issue_pair(session, user)
    p2 = svc.rotate(session, p1.refresh_token)
    assert svc.logout(session, p2.refresh_token) is True
    for tok in (p1.refresh_token, p2.refresh_token):
        with pytest.raises(TokenRevoked):
            svc.rotate(session, tok)
    svc.rotate(session, other.refresh_token)
    assert svc.logout(session, "unknown-token") is False
    assert svc.logout(session, p2.refresh_token) is True  # idempotent


def test_unknown_and_expired_refresh_tokens(session, svc: TokenService, user,
                                            clock: FakeClock) -> None:
    with pytest.raises(TokenInvalid):
        svc.rotate(session, "never-issued")
    with pytest.raises(TokenInvalid):
        svc.rotate(session, "")
    p = svc.issue_pair(session, user)
    clock.advance(3600)
    with pytest.raises(TokenExpired):
        svc.rotate(session, p.refresh_token)


def test_refresh_for_deactivated_user_fails(session, passwords, svc: TokenService, user) -> None:
    create_user(session, "root", "admin-password", "admin", passwords=passwords)
    p = svc.issue_pair(session, user)
    user.active = False
    session.commit()
    with pytest.raises(InvalidCredentials):
        svc.rotate(session, p.refresh_token)
    assert _row(session, p.refresh_token).revoked_at is not None
    with pytest.raises(InvalidCredentials):
        svc.issue_pair(session, user)


def test_revoke_user_logs_out_everywhere(session, svc: TokenService, user) -> None:
    a, b = svc.issue_pair(session, user), svc.issue_pair(session, user)
    assert svc.revoke_user(session, user.id) == 2
    for p in (a, b):
        with pytest.raises(Unauthorized):
            svc.rotate(session, p.refresh_token)


def test_deactivate_user_kills_refresh(session, passwords, svc: TokenService, user) -> None:
    create_user(session, "root", "admin-password", "admin", passwords=passwords)
    p = svc.issue_pair(session, user)
    deactivate_user(session, user.id)
    with pytest.raises(Unauthorized):
        svc.rotate(session, p.refresh_token)
