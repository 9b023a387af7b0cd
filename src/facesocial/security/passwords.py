"""Password hashing: argon2id through argon2-cffi.

* Parameters are argon2-cffi's defaults (RFC 9106 "low memory" profile: t=3,
  m=64 MiB, p=4); a hash made with other parameters verifies and is reported by
  :meth:`Passwords.needs_rehash` so the caller re-hashes it on the next login.
* :meth:`Passwords.verify` with ``stored_hash=None`` (unknown user) verifies
  against a dummy hash made with the same parameters, so "no such user" costs
  the same time as "wrong password" and the login answer cannot be timed.
* Passwords are NFKC-normalised before hashing, so the same password typed on
  two keyboards (composed / decomposed accents, full-width digits) matches.
"""

from __future__ import annotations

import logging
import threading
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from facesocial.errors import InvalidInput

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 accepts more; the cap keeps a login from being a DoS


def normalize_password(password: str) -> str:
    if not isinstance(password, str):
        raise InvalidInput("password must be a string")
    return unicodedata.normalize("NFKC", password)


def validate_new_password(password: str) -> str:
    """Length policy for passwords being set (not for ones being checked)."""
    pw = normalize_password(password)
    if len(pw) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters",
                           field="password")
    if len(pw) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters",
                           field="password")
    return pw


class Passwords:
    """argon2id hash / verify / needs-rehash, with a dummy hash for unknown users."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        # made now, not on the first unknown-user login, so that login is not slower than others
        self._dummy = self.hasher.hash("facesocial-dummy-password-for-timing")

    @classmethod
    def with_parameters(cls, *, time_cost: int, memory_cost: int, parallelism: int) -> Passwords:
        """memory_cost in KiB. Cheap parameters are for tests only."""
        return cls(PasswordHasher(time_cost=time_cost, memory_cost=memory_cost,
                                  parallelism=parallelism))

    def hash(self, password: str) -> str:
        return self.hasher.hash(normalize_password(password))

    def _dummy_hash(self) -> str:
        return self._dummy

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches. ``stored_hash=None`` burns the same time, then False."""
        try:
            pw = normalize_password(password)
        except InvalidInput:
            pw = ""
        if len(pw) > MAX_PASSWORD_LENGTH:
            # never a valid password (see validate_new_password); still pay for one verify
            pw, stored_hash = pw[:MAX_PASSWORD_LENGTH], None
        if stored_hash is None:
            try:
                self.hasher.verify(self._dummy_hash(), pw)
            except VerificationError:
                pass
            return False
        try:
            return self.hasher.verify(stored_hash, pw)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            log.warning("stored password hash is not a valid argon2 hash; treating as mismatch")
            try:  # keep the timing of a real verify
                self.hasher.verify(self._dummy_hash(), pw)
            except VerificationError:
                pass
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True


_default: Passwords | None = None
_default_lock = threading.Lock()


def default_passwords() -> Passwords:
    """The process-wide hasher with production parameters (built on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Passwords()
    return _default


def hash_password(password: str) -> str:
    return default_passwords().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    return default_passwords().verify(stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    return default_passwords().needs_rehash(stored_hash)
