"""Users: create, authenticate, list, deactivate, first admin.

Transactions: every function that changes something commits its own unit of
work (``session.commit()``); on an error it raises before committing anything.
Usernames are case-insensitive: they are stored stripped and lower-cased.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facesocial.db.models import RefreshToken, User, utcnow
from facesocial.errors import (
    ConfigurationError,
    Conflict,
    InsufficientRole,
    InvalidCredentials,
    InvalidInput,
    NotFound,
)
from facesocial.security.passwords import Passwords, default_passwords, validate_new_password
from facesocial.settings import Settings

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("admin", "user", "service")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.@+-]{0,127}$")


def normalize_username(username: str) -> str:
    if not isinstance(username, str):
        raise InvalidInput("username must be a string", field="username")
    return username.strip().lower()


def _validate_username(username: str) -> str:
    name = normalize_username(username)
    if not _USERNAME.fullmatch(name):
        raise InvalidInput("username must be 1-128 characters of a-z, 0-9 and _ . @ + - "
                           "(starting with a letter or digit)", field="username")
    return name


def _validate_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == normalize_username(username)))


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def create_user(session: Session, username: str, password: str, role: str = "user", *,
                passwords: Passwords | None = None) -> User:
    """Create and commit a user. Conflict when the username is taken."""
    name = _validate_username(username)
    _validate_role(role)
    pw = validate_new_password(password)
    if get_user_by_username(session, name) is not None:
        raise Conflict("username already exists", field="username")
    user = User(username=name, password_hash=(passwords or default_passwords()).hash(pw),
                role=role, active=True)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent create won the race
        session.rollback()
        raise Conflict("username already exists", field="username") from exc
    return user


def authenticate(session: Session, username: str, password: str, *,
                 passwords: Passwords | None = None) -> User:
    """The active user with this username and password, else InvalidCredentials.

    Unknown user, wrong password and deactivated user give the same error and
    cost one argon2 verify each (a dummy hash for unknown users). A correct
    password whose hash has outdated parameters is re-hashed and committed.
    """
    pw_service = passwords or default_passwords()
    try:
        user = get_user_by_username(session, username)
    except InvalidInput:
        user = None
    ok = pw_service.verify(user.password_hash if user is not None else None, password)
    if user is None or not ok or not user.active:
        raise InvalidCredentials("invalid username or password")
    if pw_service.needs_rehash(user.password_hash):
        user.password_hash = pw_service.hash(password)
        session.commit()
    return user


def list_users(session: Session, *, include_inactive: bool = True) -> list[User]:
    stmt = select(User).order_by(User.created_at, User.username)
    if not include_inactive:
        stmt = stmt.where(User.active.is_(True))
    return list(session.scalars(stmt))


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)
                          .where(User.role == "admin", User.active.is_(True))) or 0


def _revoke_all_refresh_tokens(session: Session, user_id: str) -> int:
    res = session.execute(update(RefreshToken)
                          .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))
    return res.rowcount or 0  # type: ignore[attr-defined]


def deactivate_user(session: Session, user_id: str) -> User:
    """Deactivate a user and revoke all their refresh tokens (commits).

    Refuses (Conflict) to deactivate the last active admin. Access tokens
    already issued stay valid until they expire (``access_token_ttl_s``)
    unless the API layer checks ``user.active`` per request.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user", user_id=user_id)
    if user.active and user.role == "admin" and _active_admins(session) <= 1:
        raise Conflict("cannot deactivate the last active admin", user_id=user_id)
    user.active = False
    _revoke_all_refresh_tokens(session, user.id)
    session.commit()
    return user


def activate_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user", user_id=user_id)
    user.active = True
    session.commit()
    return user


def set_password(session: Session, user_id: str, new_password: str, *,
                 passwords: Passwords | None = None) -> User:
    """Set a new password and revoke every refresh token of the user (commits)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user", user_id=user_id)
    pw = validate_new_password(new_password)
    user.password_hash = (passwords or default_passwords()).hash(pw)
    _revoke_all_refresh_tokens(session, user.id)
    session.commit()
    return user


def require_role(role: str, allowed: Sequence[str] | str) -> None:
    """Forbidden (insufficient_role) unless ``role`` is one of ``allowed``."""
    allowed_set = {allowed} if isinstance(allowed, str) else set(allowed)
    if role not in allowed_set:
        raise InsufficientRole("this action needs role " + " or ".join(sorted(allowed_set)),
                               role=role)


def ensure_first_admin(session: Session, settings: Settings, *,
                       passwords: Passwords | None = None) -> User | None:
    """Create the admin from settings when the users table is empty.

    Returns the new admin, or None when users already exist or no admin is
    configured (a warning is logged then: nobody can log in yet). A username
    without a password (or the other way round) is a ConfigurationError, as is
    an admin password that fails the password policy. Safe when several
    processes start at once: the loser of the unique-username race gets None.
    """
    if session.scalar(select(func.count()).select_from(User)):
        return None
    username, password = settings.admin_username, settings.admin_password
    if not username and not password:
        log.warning("no users exist and FACESOCIAL_ADMIN_USERNAME / FACESOCIAL_ADMIN_PASSWORD "
                    "are not set: nobody can log in")
        return None
    if not username or not password:
        raise ConfigurationError("set both FACESOCIAL_ADMIN_USERNAME and "
                                 "FACESOCIAL_ADMIN_PASSWORD (or neither)")
    try:
        user = create_user(session, username, password, "admin", passwords=passwords)
    except Conflict:
        return None  # another process created it first
    except InvalidInput as exc:
        raise ConfigurationError(f"admin from settings is invalid: {exc.message}") from exc
    log.info("created first admin user %r", user.username)
    return user
