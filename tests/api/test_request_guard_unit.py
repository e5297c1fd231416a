"""The request guard's decisions, with plain values."""

from __future__ import annotations

from app.http_guard import FailureBudget, body_limit, key_id_of

SMALL, BULK = 1_000, 50_000


def test_only_the_import_routes_take_bulk_bodies() -> None:
    bulk = ["/api/v1/campaigns/7/contacts", "/api/v1/campaigns/7/contacts/csv", "/api/v1/dnc/import",
            "/api/v1/national-dnc", "/console/campaigns/7/import"]  # fmt: skip
    small = ["/api/v1/campaigns", "/api/v1/campaigns/7", "/api/v1/budget/caps", "/api/v1/dnc", "/twilio/voice",
             "/console/login", "/api/v1/campaigns/7/contacts/x", "/api/v1/dnc/import/", "/console/campaigns/7/start"]  # fmt: skip
    assert {body_limit(p, small=SMALL, bulk=BULK) for p in bulk} == {BULK}
    assert {body_limit(p, small=SMALL, bulk=BULK) for p in small} == {SMALL}


def test_only_a_key_shaped_token_yields_an_id_to_log_and_never_its_secret() -> None:
    assert key_id_of("sb_abc123_s3cr3t") == "abc123"
    assert key_id_of("sb_abc123") == "abc123"
    assert key_id_of("Bearer") is None and key_id_of("") is None and key_id_of("xx_abc_def") is None
    assert key_id_of("sb_" + "a" * 100 + "_x") == "a" * 32


def test_a_client_is_refused_after_a_burst_of_failures_until_the_oldest_ages_out() -> None:
    budget = FailureBudget(burst=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert budget.retry_after("10.0.0.1", t) is None
        budget.failed("10.0.0.1", t)
    assert budget.retry_after("10.0.0.1", 3.0) == 57.0
    assert budget.retry_after("10.0.0.2", 3.0) is None  # others are not affected
    assert budget.retry_after("10.0.0.1", 60.0) is None  # the first failure aged out


def test_the_failure_table_is_bounded() -> None:
    budget = FailureBudget(burst=2, window_s=60.0, max_clients=3)
    for i, client in enumerate(["a", "b", "c", "d"]):
        budget.failed(client, float(i))
    assert len(budget._failures) == 3 and "a" not in budget._failures


async def test_a_failed_key_is_logged_with_its_id_and_client_and_never_its_secret() -> None:
    import httpx
    from structlog.testing import capture_logs

    from app.http_guard import RequestGuard

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("an unauthenticated request must not reach the app")

    async def authenticate(token: str) -> None:
        return None  # no such key

    guard = RequestGuard(app, authenticate=authenticate, small_body_bytes=SMALL, bulk_body_bytes=BULK)
    transport = httpx.ASGITransport(app=guard, client=("203.0.113.7", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://sb.test") as client:
        with capture_logs() as logs:
            response = await client.get("/api/v1/campaigns", headers={"Authorization": "Bearer sb_k3y1d_s3cr3t"})
    assert response.status_code == 401
    (entry,) = [e for e in logs if e["event"] == "auth.failed"]
    assert (entry["key_id"], entry["client"], entry["path"]) == ("k3y1d", "203.0.113.7", "/api/v1/campaigns")
    assert "s3cr3t" not in str(entry)
