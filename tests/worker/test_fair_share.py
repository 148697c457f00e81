"""Fair share: workers claim round-robin across tenants, then in queue order."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.domain.db.engine import transaction
from app.domain.db.models import Job, Tenant
from app.domain.db.types import utcnow
from app.domain.leases import claim_job, fair_next_job
from app.domain.status import JobStatus
from tests.specs import xor_mlp
from tests.worker.conftest import MakeJob, read_job


def _tenant(factory: sessionmaker[Session], name: str) -> str:
    with transaction(factory) as session:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
        return tenant.id


def _claim_next(factory: sessionmaker[Session]) -> str:
    with transaction(factory) as session:
        job_id = fair_next_job(session, "cpu")
        assert job_id is not None
        job = claim_job(session, job_id, worker="w", device="cpu", now=utcnow(), lease_seconds=30)
        assert job is not None
        return job.tenant_id


def test_one_tenants_fifty_jobs_do_not_starve_anothers_one(
    factory: sessionmaker[Session], make_job: MakeJob, tenant_id: str
) -> None:
    a, b, c = tenant_id, _tenant(factory, "bob"), _tenant(factory, "carol")
    for _ in range(50):
        make_job(tenant_id=a)
    make_job(tenant_id=b)  # queued after all of a's
    assert [_claim_next(factory) for _ in range(2)] == [a, b]  # b within two claims
    for _ in range(2):
        make_job(tenant_id=c)
    make_job(tenant_id=b)
    # c was never served; then whoever was served longest ago: a, b, then c again.
    assert [_claim_next(factory) for _ in range(5)] == [c, a, b, c, a]


def test_queue_order_within_a_tenant_and_only_the_messages_queue(
    factory: sessionmaker[Session], make_job: MakeJob
) -> None:
    first, second = make_job(), make_job()
    make_job(queue="gpu")
    with transaction(factory) as session:
        assert fair_next_job(session, "cpu") == first
        assert claim_job(session, first, worker="w", device="cpu", now=utcnow(), lease_seconds=9)
        assert fair_next_job(session, "cpu") == second
        assert fair_next_job(session, "gpu") is not None
        session.execute(select(Job.id))  # the transaction stays usable


def test_a_message_runs_the_fair_choice_and_the_other_job_later(
    factory: sessionmaker[Session],
    make_job: MakeJob,
    run_task: Callable[[str], str],
    tenant_id: str,
    settings: Settings,
) -> None:
    a_first = make_job(xor_mlp(epochs=2), tenant_id=tenant_id)
    with transaction(factory) as session:  # a was served a moment ago
        session.add(
            Job(
                tenant_id=tenant_id,
                name="earlier",
                status="succeeded",
                dataset="builtin:xor",
                device="cpu",
                queue="cpu",
                spec={},
                created_at=utcnow(),
                claimed_at=utcnow(),
            )
        )
    b_job = make_job(xor_mlp(epochs=2), tenant_id=_tenant(factory, "bob"))

    assert run_task(a_first) == "finished"  # a's message: b's job, never served, goes first
    assert read_job(factory, b_job).status == "succeeded"
    assert read_job(factory, a_first).status == "queued"
    assert run_task(b_job) == "finished"  # b's message: the job left
    assert read_job(factory, a_first).status == "succeeded"


def test_a_worker_claims_only_jobs_it_has_the_devices_for(
    factory: sessionmaker[Session], make_job: MakeJob, tenant_id: str
) -> None:
    wide = make_job(min_devices=4)
    narrow = make_job(tenant_id=_tenant(factory, "bob"))
    with transaction(factory) as session:
        assert fair_next_job(session, "cpu", devices=1) == narrow
        assert fair_next_job(session, "cpu", devices=4) in (wide, narrow)
        session.execute(update(Job).where(Job.id == narrow).values(status=JobStatus.RUNNING))
        assert fair_next_job(session, "cpu", devices=1) is None
        assert fair_next_job(session, "cpu", devices=8) == wide
