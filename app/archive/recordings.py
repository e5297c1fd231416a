"""Hearing, downloading and deleting a call's recording: the I/O around ``app.recording.access``.

Who may: supervisors and admins, and ops keys with the ``recordings`` grant (the routes check). Every download
is audited; playback is audited once a minute per key and call (a browser's player asks for many ranges as it
seeks). A deleted recording is gone from the store, and the call row says when (410 after that).
"""

from __future__ import annotations

from datetime import datetime

import structlog
from fastapi.responses import Response
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.archive import review
from app.archive.models import Call
from app.auth.keys import Principal
from app.problems import ProblemError
from app.recording.access import RangeNotSatisfiable, byte_range
from app.recording.codec import MEDIA_TYPE
from app.recording.storage import RecordingStore

log = structlog.get_logger()
PLAY_AUDIT_EVERY_S = 60


async def _recorded_call(db: AsyncSession, call_sid: str) -> Call:
    call = (await db.execute(select(Call).where(Call.call_sid == call_sid))).scalar_one_or_none()
    if call is None:
        raise ProblemError(404, "Call not found", f"No archived call {call_sid}.")
    if call.recording_key is None:
        raise ProblemError(404, "No recording", f"Call {call_sid} was not recorded.")
    if call.recording_deleted_at is not None:
        raise ProblemError(
            410, "Recording deleted", f"The recording of call {call_sid} was deleted.",
            deleted_at=call.recording_deleted_at.isoformat(),
        )  # fmt: skip
    return call


async def recording_response(
    db: AsyncSession,
    store: RecordingStore,
    redis: Redis,
    principal: Principal,
    call_sid: str,
    *,
    range_header: str | None,
    download: bool,
    via: str,
) -> Response:
    call = await _recorded_call(db, call_sid)
    assert call.recording_key is not None
    if call.recording_key.endswith("/"):  # parts kept, never joined (the store failed at the call's end)
        raise ProblemError(404, "Recording incomplete", f"The recording of call {call_sid} was not joined.")
    data = await store.get(call.recording_key)
    if data is None:
        log.error("recording.missing_from_store", call_sid=call_sid, key=call.recording_key)
        raise ProblemError(404, "Recording missing", f"The recording of call {call_sid} is not in the store.")
    size = len(data)
    try:
        wanted = None if download else byte_range(range_header, size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    if download:
        await review.audit(db, principal, "download_recording", target=call_sid, via=via)
    elif await redis.set(f"sb:audit:play:{via}:{principal.key_id}:{call_sid}", "1", nx=True, ex=PLAY_AUDIT_EVERY_S):
        await review.audit(db, principal, "play_recording", target=call_sid, via=via)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{call_sid}.ogg"'
    if wanted is None:
        return Response(data, media_type=MEDIA_TYPE, headers=headers)
    first, last = wanted
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Response(data[first : last + 1], status_code=206, media_type=MEDIA_TYPE, headers=headers)


async def delete_recording(
    db: AsyncSession,
    store: RecordingStore,
    principal: Principal | None,
    call_sid: str,
    *,
    now: datetime,
    reason: str,
    via: str = "api",
) -> None:
    """Erase the recording from the store (the joined file and any parts left), then mark the call. A failed
    delete leaves the call unmarked, so it is tried again (retention) or reported (the route)."""
    call = await _recorded_call(db, call_sid)
    removed = await store.delete_prefix(f"{call_sid}/")
    call.recording_deleted_at = now
    await db.commit()
    await review.audit(db, principal, "delete_recording", target=call_sid, detail={"reason": reason,
                       "objects": removed}, via=via)  # fmt: skip
