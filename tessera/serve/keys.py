"""API keys: random secrets shown once, stored only as their SHA-256.

A key is `tsk_` + 32 random bytes (URL-safe base64). With that much entropy a plain SHA-256
is enough to make a stolen database useless (no salt or slow hash needed: nothing to guess).
"""

from __future__ import annotations

import hashlib
import secrets

from tessera.serve.db import JobStore

PREFIX = "tsk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: JobStore, name: str, rate_per_min: int | None = None, quota_per_day: int | None = None
) -> tuple[str, str]:
    """Make a new key; returns (key id, the secret). The secret is not stored and cannot be shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    key_id = store.add_key(name, hash_key(secret), rate_per_min, quota_per_day)
    return key_id, secret


def lookup(store: JobStore, secret: str) -> dict | None:
    """The key record for a presented secret, or None (unknown or revoked)."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    return store.key_by_hash(hash_key(secret))
