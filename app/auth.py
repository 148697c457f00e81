"""API keys: shown once, stored as SHA-256 hashes, found by their first characters."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.db.models import ApiKey, Tenant

KEY_PREFIX = "bp_"
PREFIX_LENGTH = 10  # stored in clear to find a key's row and to tell keys apart in lists


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).first()
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, tenant_name: str, key: str | None = None) -> str:
    """Add a key for `tenant_name` (created if new); returns the key, which is not stored."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = key or generate_key()
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:PREFIX_LENGTH]))
    session.flush()
    return key


def ensure_api_key(session: Session, key: str, tenant_name: str = "default") -> None:
    """Make sure `key` exists (for BACKPROP_BOOTSTRAP_API_KEY); idempotent."""
    if session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first() is None:
        create_api_key(session, tenant_name, key)


def list_api_keys(session: Session, tenant: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key (of `tenant`, if given) with its tenant's name, oldest first (the secrets
    are not stored)."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    rows = session.execute(query.order_by(ApiKey.created_at, ApiKey.id)).all()
    return [(key, name) for key, name in rows]


def find_api_key(session: Session, key_or_id: str) -> ApiKey | None:
    """A key given as itself, as its id, or as the first characters `keys list` shows
    (those only when no other key starts with them)."""
    key = session.scalars(
        select(ApiKey).where((ApiKey.id == key_or_id) | (ApiKey.key_hash == hash_key(key_or_id)))
    ).first()
    prefix = key_or_id.removesuffix("…")
    if key is None and len(prefix) == PREFIX_LENGTH:
        by_prefix = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).all()
        key = by_prefix[0] if len(by_prefix) == 1 else None
    return key


def revoke_api_key(session: Session, key_or_id: str, now: datetime) -> ApiKey | None:
    """Revoke a key (see `find_api_key`); None when there is no such key. Every API process
    refuses it, and ends its event streams, within half a second (`app.key_watch`)."""
    key = find_api_key(session, key_or_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = now
    return key


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: the tenant of its API key (immutable, so it can be cached)."""

    tenant_id: str
    tenant_name: str
    key_id: str | None = None  # the key's row: its use is noted, its revocation ends streams

    @property
    def id(self) -> str:  # reads as `tenant.id` where a route filters by tenant
        return self.tenant_id


def tenant_for_key(session: Session, key: str) -> Caller | None:
    """The tenant owning an active key, or None.

    The rows are found by the key's first characters (its stored `prefix`, not secret
    enough to matter), and the secret's hash is compared in constant time, so the time an
    answer takes says nothing about how much of a guessed key's hash was right.
    """
    digest = hash_key(key)
    rows = session.execute(
        select(ApiKey.id.label("key_id"), ApiKey.key_hash, Tenant.id, Tenant.name)
        .join(Tenant, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.prefix == key[:PREFIX_LENGTH], ApiKey.revoked_at.is_(None))
    ).all()
    for row in rows:
        if hmac.compare_digest(row.key_hash, digest):
            return Caller(tenant_id=row.id, tenant_name=row.name, key_id=row.key_id)
    return None


class KeyCache:
    """Key hash → caller for `ttl` seconds, so a poll costs no key lookup in the database.

    Only valid keys are cached (a wrong key is looked up every time, so a newly created key
    works at once); a revoked key keeps working for at most `ttl` seconds in each API process.
    Keys are hashed before they are used as cache keys, like everywhere else. A `ttl` of 0
    or less caches nothing; past `max_entries`, the least recently used key goes first.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: TTLCache[str, Caller] = TTLCache(max_entries, max(ttl, 0))
        self._lock = threading.Lock()  # a TTLCache is not thread-safe; even `get` reorders it

    def get(self, digest: str) -> Caller | None:
        with self._lock:
            return self._entries.get(digest)

    def clear(self) -> None:
        """Forget every key (a key was revoked somewhere: re-check each on its next use)."""
        with self._lock:
            self._entries.clear()

    def put(self, digest: str, caller: Caller) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[digest] = caller
