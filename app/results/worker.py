"""The post-call worker: results jobs and webhook deliveries, durable in SQL, run by every node.

Each node polls (``POST_CALL_POLL_S``, and at once when it archived a call) for due jobs and deliveries and
claims each with a conditional update and a lease, so two nodes never run the same one, and one left by a
node that died is taken again once its lease lapses. Jobs and deliveries run as tasks of their own, bounded in
number: a receiver that is slow or down holds only its own delivery, never archiving, other jobs or other
receivers.

A job: the call's transcript and facts to the chat model (structured outputs, strict, against the campaign's
schema or the deployment's), the answer validated, stored with the call and metered as its cost (the call's,
the day's and the campaign's spend); then one delivery per configured receiver. A job that keeps failing
(network, 5xx, an invalid answer) is retried with backoff, six tries; a call with nothing said, or a day whose
budget is spent, is skipped and said so. A delivery whose receiver does not answer 2xx is retried with backoff
for 24 h; every attempt is logged with its response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from app.archive import review
from app.archive.models import Call, CallEvent
from app.budget.policy import Action
from app.budget.pricing import chat_cost
from app.dialer.models import Campaign
from app.results.extraction import (
    DEFAULT_SCHEMA,
    CallText,
    InvalidResult,
    has_conversation,
    parse_answer,
    request_body,
    schema_problems,
)
from app.results.models import PostCallJob, WebhookAttempt, WebhookDelivery
from app.results.schedule import next_delivery_try, next_job_try
from app.results.signing import HEADER, signature
from app.settings import Settings

log = structlog.get_logger()

JOB_LEASE_S = 180.0
MAX_JOBS = 4  # at once on a node
MAX_DELIVERIES = 32
RESPONSE_KEPT = 1024  # characters of a receiver's answer kept in the attempt log
MODEL_TIMEOUT_S = 60.0


def load_default_schema(settings: Settings) -> dict[str, Any]:
    """POST_CALL_SCHEMA_FILE's schema, checked as a campaign's is; else the built-in one."""
    if settings.post_call_schema_file is None:
        return DEFAULT_SCHEMA
    schema = orjson.loads(Path(settings.post_call_schema_file).read_bytes())
    problems = schema_problems(schema)
    if problems:
        raise ValueError(f"POST_CALL_SCHEMA_FILE {settings.post_call_schema_file}: {problems[0]}")
    return dict(schema)


def now_utc() -> datetime:
    return datetime.now(UTC)


class JobFailed(Exception):
    """Not worth another try (the request itself is refused, or the model refused)."""


class PostCallWorker:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        budget: Any,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.budget = budget
        self.clock = clock
        self.default_schema = load_default_schema(settings)
        self.model = settings.post_call_model or settings.chat_model
        key = settings.chat_api_key or settings.openai_api_key
        self.chat = openai.AsyncOpenAI(
            base_url=settings.chat_base_url, api_key=key.get_secret_value() if key else "unset", max_retries=0
        )
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._wake = asyncio.Event()
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        held = list(self._tasks)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._hand_back(held)
        await self.http.aclose()
        await self.chat.close()

    async def _hand_back(self, held: list[tuple[str, int]]) -> None:
        """What this node stopped in the middle of is due again at once, for any node: not left leased (a job
        for JOB_LEASE_S) to a node that is gone. What finished as it was stopped keeps its state."""
        if not held:
            return
        now = self.clock()
        try:
            async with self.sessionmaker() as session, session.begin():
                for table, kind, busy in ((PostCallJob, "job", "running"), (WebhookDelivery, "delivery", "sending")):
                    ids = [ident for k, ident in held if k == kind]
                    if ids:
                        await session.execute(
                            update(table)
                            .where(table.id.in_(ids), table.status == busy)
                            .values(status="pending", next_at=now, lease_until=None)
                        )
        except Exception:  # the database away: their leases lapse, and any node claims them then
            log.exception("post_call.hand_back_failed", held=len(held))

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.pass_once()
            except Exception:  # the database away: the next poll tries again
                log.exception("post_call.pass_failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.post_call_poll_s)
            except TimeoutError:
                pass

    async def pass_once(self) -> None:
        """Claim what is due (as many as there is room for) and start each as a task of its own."""
        running_jobs = sum(1 for kind, _ in self._tasks if kind == "job")
        running_deliveries = len(self._tasks) - running_jobs
        for job_id in await self._claim(PostCallJob, MAX_JOBS - running_jobs, JOB_LEASE_S):
            self._start("job", job_id, self.run_job)
        lease = self.settings.webhook_timeout_s + 30
        for delivery_id in await self._claim(WebhookDelivery, MAX_DELIVERIES - running_deliveries, lease):
            self._start("delivery", delivery_id, self.deliver)

    def _start(self, kind: str, ident: int, run: Callable[[int], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await run(ident)
            except Exception:  # left leased: claimed again once the lease lapses
                log.exception("post_call.task_failed", kind=kind, id=ident)
            finally:
                self._tasks.pop((kind, ident), None)
                self._wake.set()  # room for the next one

        self._tasks[(kind, ident)] = asyncio.create_task(guarded(), name=f"post-call-{kind}-{ident}")

    async def _claim(self, table: type[PostCallJob] | type[WebhookDelivery], room: int, lease_s: float) -> list[int]:
        if room <= 0:
            return []
        now = self.clock()
        busy = "running" if table is PostCallJob else "sending"
        due = or_(
            and_(table.status == "pending", table.next_at <= now),
            and_(table.status == busy, table.lease_until < now),  # its node died mid-way
        )
        claimed: list[int] = []
        async with self.sessionmaker() as session:
            ids = list(await session.scalars(select(table.id).where(due).order_by(table.next_at).limit(room)))
            for ident in ids:
                result = await session.execute(
                    update(table)
                    .where(table.id == ident, due)
                    .values(status=busy, lease_until=now + timedelta(seconds=lease_s), attempts=table.attempts + 1)
                )
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(ident)
            await session.commit()
        return claimed

    # -- a results job -------------------------------------------------------------------------------

    async def run_job(self, job_id: int) -> None:
        async with self.sessionmaker() as session:
            job = await session.get(PostCallJob, job_id)
            assert job is not None
            call = (
                await session.execute(
                    select(Call).where(Call.call_sid == job.call_sid).options(selectinload(Call.segments))
                )
            ).scalar_one()
            campaign = await session.get(Campaign, call.campaign_id) if call.campaign_id is not None else None
            attempts, sid = job.attempts, job.call_sid
        schema = campaign.extraction_schema if campaign is not None and campaign.extraction_schema else None
        schema = schema or self.default_schema
        lines = tuple((s.speaker, s.text) for s in call.segments)
        if call.transcript_purged_at is not None or not has_conversation(lines):
            await self._finish(job_id, sid, "skipped", "nothing was said: no caller line", campaign=campaign)
            return
        verdict = await self.budget.open_for(now=self.clock(), campaign_id=call.campaign_id, direction=call.direction)
        if verdict.action is not Action.ok:
            await self._finish(job_id, sid, "skipped", f"budget: {verdict.reason}"[:500], campaign=campaign)
            return
        text = CallText(
            direction=call.direction,
            started_at=call.started_at.isoformat(),
            duration_s=call.duration_ms / 1000 if call.duration_ms is not None else None,
            disposition=call.disposition,
            lines=lines,
        )
        try:
            summary, extraction, usage = await self._ask(text, schema)
        except JobFailed as exc:
            await self._finish(job_id, sid, "failed", str(exc)[:500], campaign=campaign)
            return
        except (openai.APIError, InvalidResult) as exc:
            retry = next_job_try(attempts, self.clock(), self.settings.post_call_retry_base_s)
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("post_call.job_retry", call_sid=sid, attempts=attempts, error=error, retry=retry is not None)
            if retry is None:
                await self._finish(job_id, sid, "failed", error, campaign=campaign)
                return
            async with self.sessionmaker() as session, session.begin():
                await session.execute(
                    update(PostCallJob)
                    .where(PostCallJob.id == job_id)
                    .values(status="pending", next_at=retry, lease_until=None, last_error=error)
                )
            return
        await self._finish(
            job_id, sid, "done", None, campaign=campaign, summary=summary, extraction=extraction, usage=usage
        )

    async def _ask(self, text: CallText, schema: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        body = request_body(self.model, text, schema)
        try:
            completion = await self.chat.chat.completions.create(**body, timeout=MODEL_TIMEOUT_S)
        except openai.APIStatusError as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                raise JobFailed(f"the chat model refused the request ({exc.status_code}): {exc.message}") from None
            raise
        message = completion.choices[0].message
        if message.refusal:
            raise JobFailed(f"the model refused: {message.refusal}")
        summary, extraction = parse_answer(message.content, schema)
        usage = completion.usage.model_dump() if completion.usage is not None else {}
        return summary, extraction, usage

    async def _finish(
        self,
        job_id: int,
        call_sid: str,
        status: str,
        detail: str | None,
        *,
        campaign: Campaign | None,
        summary: str | None = None,
        extraction: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """One transaction: the results on the call (once: only while still pending), the cost, the job's end,
        and the deliveries. Then the spend, into the budget's ledger."""
        now = self.clock()
        cost = chat_cost(usage, self.model, self.budget.prices) if usage else None
        targets = self._targets(campaign)
        async with self.sessionmaker() as session, session.begin():
            stored = await session.execute(
                update(Call)
                .where(Call.call_sid == call_sid, Call.results_status == "pending")
                .values(results_status=status, results_detail=detail, summary=summary, extraction=extraction,
                        results_at=now,
                        cost_micros=Call.cost_micros if cost is None else func.coalesce(Call.cost_micros, 0) + cost.micros)
            )  # fmt: skip
            await session.execute(
                update(PostCallJob)
                .where(PostCallJob.id == job_id)
                .values(status="failed" if status == "failed" else "done", done_at=now, lease_until=None,
                        last_error=detail if status != "done" else None)
            )  # fmt: skip
            if getattr(stored, "rowcount", 0) != 1:
                log.warning("post_call.already_stored", call_sid=call_sid)
                return
            if cost is not None:
                session.add(CallEvent(call_sid=call_sid, kind="cost", created_at=now, offset_ms=None, detail={
                    "kind": "post_call", "micros": cost.micros, "detail": cost.detail,
                    "prices": cost.price_version, "model": self.model,
                }))  # fmt: skip
            if targets:
                call = (
                    await session.execute(
                        select(Call).where(Call.call_sid == call_sid).options(selectinload(Call.segments))
                    )
                ).scalar_one()
                body = self.payload(call)
                for url in targets:
                    session.add(WebhookDelivery(
                        call_sid=call_sid, campaign_id=campaign.id if campaign is not None and campaign.webhook_url
                        else None, url=url, event="call.results", body=body, status="pending", attempts=0,
                        created_at=now, first_due_at=now, next_at=now,
                    ))  # fmt: skip
        log.info("post_call.results", call_sid=call_sid, status=status, detail=detail,
                 micros=cost.micros if cost else 0, deliveries=len(targets))  # fmt: skip
        if cost is not None:
            await self._meter(call_sid, campaign, cost.micros, now)
        if targets:
            self._wake.set()

    async def _meter(self, call_sid: str, campaign: Campaign | None, micros: int, now: datetime) -> None:
        try:
            await self.budget.ledger.charge(
                call_sid=call_sid, day=self.budget.today(now), campaign_id=campaign.id if campaign else None,
                micros=micros,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - Redis away: the cost is on the call in SQL all the same
            log.warning("post_call.not_metered", call_sid=call_sid, micros=micros, error=repr(exc))

    def _targets(self, campaign: Campaign | None) -> list[str]:
        if campaign is not None and campaign.webhook_url:
            return [campaign.webhook_url]
        return [self.settings.post_call_webhook_url] if self.settings.post_call_webhook_url else []

    def payload(self, call: Call) -> str:
        """What a receiver gets: the call's facts, transcript, results and a link to its recording."""
        facts = review.summary(call)
        recording = None
        if call.recording_key is not None and call.recording_deleted_at is None:
            recording = f"{self.settings.public_base_url}/api/v1/calls/{call.call_sid}/recording"
        body = {
            "event": "call.results",
            "call": facts,
            "results": {"status": call.results_status, "detail": call.results_detail, "summary": call.summary,
                        "extraction": call.extraction},
            "transcript": [{"speaker": s.speaker, "text": s.text, "offset_ms": s.offset_ms,
                            "interrupted": s.interrupted} for s in call.segments],
            "recording_url": recording,
        }  # fmt: skip
        return orjson.dumps(body).decode()

    # -- a webhook delivery ----------------------------------------------------------------------------

    async def deliver(self, delivery_id: int) -> None:
        async with self.sessionmaker() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            campaign = await session.get(Campaign, delivery.campaign_id) if delivery.campaign_id else None
        secret = campaign.webhook_secret if campaign is not None else None
        if secret is None and self.settings.post_call_webhook_secret is not None:
            secret = self.settings.post_call_webhook_secret.get_secret_value()
        body = delivery.body.encode()
        started = time.monotonic()
        code: int | None = None
        answer: str | None = None
        error: str | None = None
        if secret is None:
            error = "no secret to sign with: set the campaign's webhook_secret or POST_CALL_WEBHOOK_SECRET"
        else:
            headers = {
                "Content-Type": "application/json",
                HEADER: signature(secret, int(time.time()), body),
                "Switchboard-Delivery": str(delivery.id),
                "Switchboard-Event": delivery.event,
                "User-Agent": "Switchboard-Webhooks/1",
            }
            try:
                response = await self.http.post(delivery.url, content=body, headers=headers)
                code, answer = response.status_code, response.text[:RESPONSE_KEPT]
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        now = self.clock()
        accepted = code is not None and 200 <= code < 300
        retry = None if accepted or secret is None else next_delivery_try(
            delivery.attempts, delivery.first_due_at, now, self.settings.webhook_retry_base_s,
            self.settings.webhook_retry_for_s,
        )  # fmt: skip
        status = "delivered" if accepted else ("pending" if retry is not None else "gave_up")
        async with self.sessionmaker() as session, session.begin():
            session.add(WebhookAttempt(delivery_id=delivery.id, at=now, status_code=code, response=answer, error=error,
                                       duration_ms=int((time.monotonic() - started) * 1000)))  # fmt: skip
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery.id)
                .values(status=status, lease_until=None, next_at=retry or now,
                        delivered_at=now if accepted else None)
            )  # fmt: skip
        if not accepted:
            log.warning("webhook.attempt_failed", delivery=delivery.id, call_sid=delivery.call_sid, status_code=code,
                        error=error, attempts=delivery.attempts, next_at=retry.isoformat() if retry else None)  # fmt: skip
