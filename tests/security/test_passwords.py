from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type

from facesocial.errors import InvalidInput
from facesocial.security.passwords import (
    MAX_PASSWORD_LENGTH,
    Passwords,
    default_passwords,
    validate_new_password,
)


def test_hash_and_verify(passwords: Passwords) -> None:
    h = passwords.hash("correct horse battery")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert passwords.verify(h, "correct horse battery")
    assert not passwords.verify(h, "correct horse batterY")
    assert not passwords.verify(h, "")
    assert passwords.hash("correct horse battery") != h  # random salt


def test_default_parameters_are_argon2id_rfc9106() -> None:
    hasher = default_passwords().hasher
    assert hasher.type is Type.ID
    assert hasher.memory_cost >= 64 * 1024 and hasher.time_cost >= 3


def test_unicode_normalisation(passwords: Passwords) -> None:
    h = passwords.hash("caf\u00e9-p\u00e4sswort")  # composed
    assert passwords.verify(h, "cafe\u0301-pa\u0308sswort")  # decomposed


def test_needs_rehash_when_parameters_change(passwords: Passwords) -> None:
    old = passwords.hash("a fine password")
    stronger = Passwords.with_parameters(time_cost=2, memory_cost=16, parallelism=1)
    assert not passwords.needs_rehash(old)
    assert stronger.needs_rehash(old)
    assert stronger.verify(old, "a fine password")  # old hashes still verify
    assert not stronger.needs_rehash(stronger.hash("a fine password"))
    assert passwords.needs_rehash("not a hash")


def test_invalid_stored_hash_is_a_mismatch(passwords: Passwords) -> None:
    assert not passwords.verify("garbage", "whatever")
    assert not passwords.verify("$argon2id$v=19$m=8,t=1,p=1$broken", "whatever")


class SpyHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifies = 0

    def verify(self, hash, password):  # type: ignore[no-untyped-def]  # noqa: A002
        self.verifies += 1
        return super().verify(hash, password)


def test_unknown_user_costs_one_verify_against_a_dummy_hash() -> None:
    spy = SpyHasher()
    pw = Passwords(spy)
    h = pw.hash("real password 1")
    spy.verifies = 0
    assert pw.verify(None, "real password 1") is False
    assert spy.verifies == 1
    assert pw.verify(h, "wrong password") is False
    assert spy.verifies == 2
    assert pw.verify(None, "x" * (MAX_PASSWORD_LENGTH + 10)) is False  # oversized: still one
    assert spy.verifies == 3


def test_oversized_password_never_matches(passwords: Passwords) -> None:
    long = "y" * MAX_PASSWORD_LENGTH
    h = passwords.hash(long)
    assert passwords.verify(h, long)
    assert not passwords.verify(h, long + "y")


def test_new_password_policy() -> None:
    assert validate_new_password("12345678") == "12345678"
    with pytest.raises(InvalidInput):
        validate_new_password("short")
    with pytest.raises(InvalidInput):
        validate_new_password("z" * (MAX_PASSWORD_LENGTH + 1))
