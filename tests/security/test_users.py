from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from facesocial.db.models import RefreshToken, User
from facesocial.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    InsufficientRole,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from facesocial.security.passwords import Passwords
from facesocial.security.tokens import TokenService
from facesocial.security.users import (
    activate_user,
    authenticate,
    create_user,
    deactivate_user,
    ensure_first_admin,
    list_users,
    require_role,
    set_password,
)
from facesocial.settings import Settings

from .conftest import SECRET
from .test_passwords import SpyHasher


def test_create_and_authenticate(session, passwords: Passwords) -> None:
    u = create_user(session, "  Alice ", "alice-password", "user", passwords=passwords)
    assert u.username == "alice" and u.role == "user" and u.active
    assert u.password_hash.startswith("$argon2id$")
    assert authenticate(session, "ALICE", "alice-password", passwords=passwords).id == u.id


def test_create_rejects_bad_input(session, passwords: Passwords) -> None:
    create_user(session, "bob", "bob-password", passwords=passwords)
    with pytest.raises(Conflict):
        create_user(session, "BOB", "another-password", passwords=passwords)
    with pytest.raises(InvalidInput):
        create_user(session, "carol", "pw", passwords=passwords)
    with pytest.raises(InvalidInput):
        create_user(session, "carol", "carol-password", "root", passwords=passwords)
    with pytest.raises(InvalidInput):
        create_user(session, "has space", "carol-password", passwords=passwords)
    with pytest.raises(InvalidInput):
        create_user(session, "", "carol-password", passwords=passwords)


@pytest.mark.parametrize("username,password", [
    ("alice", "wrong-password"), ("nobody", "alice-password"), ("bad name!", "x"),
])
def test_authenticate_failures_look_the_same(session, passwords, username, password) -> None:
    create_user(session, "alice", "alice-password", passwords=passwords)
    with pytest.raises(InvalidCredentials) as exc:
        authenticate(session, username, password, passwords=passwords)
    err = exc.value
    assert isinstance(err, Unauthorized)
    assert (err.code, err.subcode, err.status) == ("unauthorized", "invalid_credentials", 401)
    assert err.message == "invalid username or password"
    assert err.to_dict()["subcode"] == "invalid_credentials"


def test_unknown_user_still_runs_one_verify(session) -> None:
    spy = SpyHasher()
    pw = Passwords(spy)
    create_user(session, "alice", "alice-password", passwords=pw)
    spy.verifies = 0
    with pytest.raises(InvalidCredentials):
        authenticate(session, "nobody", "alice-password", passwords=pw)
    assert spy.verifies == 1
    with pytest.raises(InvalidCredentials):
        authenticate(session, "alice", "wrong-password", passwords=pw)
    assert spy.verifies == 2


def test_deactivated_user_cannot_log_in(session, passwords) -> None:
    create_user(session, "root", "admin-password", "admin", passwords=passwords)
    u = create_user(session, "dave", "dave-password", passwords=passwords)
    deactivate_user(session, u.id)
    with pytest.raises(InvalidCredentials):
        authenticate(session, "dave", "dave-password", passwords=passwords)
    activate_user(session, u.id)
    assert authenticate(session, "dave", "dave-password", passwords=passwords).id == u.id


def test_login_rehashes_outdated_hash(session, passwords) -> None:
    u = create_user(session, "erin", "erin-password", passwords=passwords)
    old = u.password_hash
    stronger = Passwords.with_parameters(time_cost=2, memory_cost=16, parallelism=1)
    authenticate(session, "erin", "erin-password", passwords=stronger)
    session.expire_all()
    new = session.get(User, u.id).password_hash
    assert new != old and "m=16,t=2,p=1" in new and "m=8,t=1,p=1" in old
    assert authenticate(session, "erin", "erin-password", passwords=stronger).id == u.id
    before = session.get(User, u.id).password_hash
    authenticate(session, "erin", "erin-password", passwords=stronger)
    assert session.get(User, u.id).password_hash == before  # no rehash when current


def test_deactivate_revokes_refresh_tokens_and_keeps_last_admin(session, passwords,
                                                                 sec_settings) -> None:
    admin = create_user(session, "root", "admin-password", "admin", passwords=passwords)
    with pytest.raises(Conflict):
        deactivate_user(session, admin.id)
    u = create_user(session, "frank", "frank-password", passwords=passwords)
    tokens = TokenService(sec_settings)
    tokens.issue_pair(session, u)
    tokens.issue_pair(session, u)
    deactivate_user(session, u.id)
    rows = session.scalars(select(RefreshToken).where(RefreshToken.user_id == u.id)).all()
    assert len(rows) == 2 and all(r.revoked_at is not None for r in rows)
    with pytest.raises(NotFound):
        deactivate_user(session, "nope")
    admin2 = create_user(session, "root2", "admin-password", "admin", passwords=passwords)
    deactivate_user(session, admin.id)  # allowed: another active admin remains
    with pytest.raises(Conflict):
        deactivate_user(session, admin2.id)


def test_set_password_revokes_sessions(session, passwords, sec_settings) -> None:
    u = create_user(session, "gina", "gina-password", passwords=passwords)
    pair = TokenService(sec_settings).issue_pair(session, u)
    set_password(session, u.id, "gina-new-password", passwords=passwords)
    with pytest.raises(InvalidCredentials):
        authenticate(session, "gina", "gina-password", passwords=passwords)
    authenticate(session, "gina", "gina-new-password", passwords=passwords)
    with pytest.raises(Unauthorized):
        TokenService(sec_settings).rotate(session, pair.refresh_token)


def test_list_users(session, passwords) -> None:
    a = create_user(session, "a1", "password-a", "admin", passwords=passwords)
    b = create_user(session, "b1", "password-b", passwords=passwords)
    create_user(session, "c1", "password-c", "service", passwords=passwords)
    deactivate_user(session, b.id)
    assert [u.username for u in list_users(session)] == ["a1", "b1", "c1"]
    assert [u.username for u in list_users(session, include_inactive=False)] == ["a1", "c1"]
    assert a.role == "admin"


def test_require_role() -> None:
    require_role("admin", "admin")
    require_role("user", ["admin", "user"])
    with pytest.raises(InsufficientRole) as exc:
        require_role("user", "admin")
    assert isinstance(exc.value, Forbidden) and exc.value.status == 403
    assert exc.value.to_dict()["code"] == "forbidden"


def _settings(**kw) -> Settings:
    return Settings(secret_key=SECRET, **kw)


def test_first_admin_created_once(session, passwords) -> None:
    s = _settings(admin_username="Admin", admin_password="admin-password-1")
    admin = ensure_first_admin(session, s, passwords=passwords)
    assert admin is not None and admin.username == "admin" and admin.role == "admin"
    assert authenticate(session, "admin", "admin-password-1", passwords=passwords).id == admin.id
    assert ensure_first_admin(session, s, passwords=passwords) is None
    assert len(list_users(session)) == 1


def test_first_admin_not_created_when_users_exist(session, passwords) -> None:
    create_user(session, "someone", "someone-password", passwords=passwords)
    s = _settings(admin_username="admin", admin_password="admin-password-1")
    assert ensure_first_admin(session, s, passwords=passwords) is None
    assert [u.username for u in list_users(session)] == ["someone"]


def test_first_admin_unconfigured_warns(session, passwords, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="facesocial.security.users"):
        assert ensure_first_admin(session, _settings(), passwords=passwords) is None
    assert "nobody can log in" in caplog.text


@pytest.mark.parametrize("kw", [
    {"admin_username": "admin"},
    {"admin_password": "admin-password-1"},
    {"admin_username": "admin", "admin_password": "short"},
    {"admin_username": "bad name", "admin_password": "admin-password-1"},
])
def test_first_admin_misconfigured(session, passwords, kw) -> None:
    with pytest.raises(ConfigurationError):
        ensure_first_admin(session, _settings(**kw), passwords=passwords)
    assert list_users(session) == []
