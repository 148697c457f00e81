"""API keys: shown once, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Tenant

KEY_PREFIX = "bp_"


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
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    session.flush()
    return key


def ensure_api_key(session: Session, key: str, tenant_name: str = "default") -> None:
    """Make sure `key` exists (for BACKPROP_BOOTSTRAP_API_KEY); idempotent."""
    if session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first() is None:
        create_api_key(session, tenant_name, key)


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant owning an active key, or None."""
    digest = hash_key(key)
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row.ApiKey.key_hash, digest):
        return None
    return row.Tenant
