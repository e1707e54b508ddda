"""Secrets of users: API tokens and passwords, and how each is kept.

Rules:
- An API token is 32 random bytes (``swat_`` + URL-safe base64) and is stored as its
  SHA-256: with that much entropy a fast hash cannot be reversed by guessing, and it lets
  a request's token be found by an indexed lookup.
- A password is chosen by a person, so it is stored as an argon2id hash (argon2-cffi's
  defaults, RFC 9106's low-memory choice), salted, slow on purpose; a hash made with older
  parameters is re-made at the next successful login.
- A check against a user that does not exist costs the same as one against a user that
  does (``verify_password`` with ``None`` hashes a dummy), so timing does not tell names.
"""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from seawall.errors import InvalidInput

TOKEN_PREFIX = "swat_"
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 1024

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Made at the first login, not at import: hashing costs ~0.2 s on every process start."""
    return _hasher.hash("not a password of anyone")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    return secrets.token_hex(6)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_rules(password: str) -> None:
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise InvalidInput(f"a password needs {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} "
                         "characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
