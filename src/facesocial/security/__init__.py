"""Authentication and authorisation building blocks (no web framework here).

passwords  argon2id hashing with rehash and a dummy hash for unknown users
users      create / authenticate / list / deactivate users, first admin
tokens     JWT access tokens, rotating refresh tokens with reuse detection
apikeys    scoped machine keys ``fsk_<prefix>_<secret>``
ratelimit  sliding-window limits, in process or shared through Redis
audit      AuditEvent rows

The names below are imported lazily, so ``import facesocial.security.ratelimit``
does not pull in SQLAlchemy and the ORM models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "apikeys": ("SCOPES", "ApiKeyInfo", "CreatedApiKey", "authenticate_api_key", "create_api_key",
                "list_api_keys", "require_scope", "revoke_api_key"),
    "passwords": ("Passwords", "hash_password", "needs_rehash", "verify_password"),
    "ratelimit": ("MemoryRateLimiter", "RateDecision", "RateLimiter", "RedisRateLimiter",
                  "enforce", "make_rate_limiter"),
    "tokens": ("AccessClaims", "TokenPair", "TokenService", "check_secret"),
    "users": ("ROLES", "authenticate", "create_user", "deactivate_user", "ensure_first_admin",
              "list_users", "require_role"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = [
    "ROLES", "SCOPES", "AccessClaims", "ApiKeyInfo", "CreatedApiKey", "MemoryRateLimiter",
    "Passwords", "RateDecision", "RateLimiter", "RedisRateLimiter", "TokenPair", "TokenService",
    "authenticate", "authenticate_api_key", "check_secret", "create_api_key", "create_user",
    "deactivate_user", "enforce", "ensure_first_admin", "hash_password", "list_api_keys",
    "list_users", "make_rate_limiter", "needs_rehash", "require_role", "require_scope",
    "revoke_api_key", "verify_password",
]

if TYPE_CHECKING:
    from facesocial.security.apikeys import (
        SCOPES,
        ApiKeyInfo,
        CreatedApiKey,
        authenticate_api_key,
        create_api_key,
        list_api_keys,
        require_scope,
        revoke_api_key,
    )
    from facesocial.security.passwords import (
        Passwords,
        hash_password,
        needs_rehash,
        verify_password,
    )
    from facesocial.security.ratelimit import (
        MemoryRateLimiter,
        RateDecision,
        RateLimiter,
        RedisRateLimiter,
        enforce,
        make_rate_limiter,
    )
    from facesocial.security.tokens import AccessClaims, TokenPair, TokenService, check_secret
    from facesocial.security.users import (
        ROLES,
        authenticate,
        create_user,
        deactivate_user,
        ensure_first_admin,
        list_users,
        require_role,
    )


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
