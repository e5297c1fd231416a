"""What a Realtime session's socket and a Twilio media stream's socket share on picows.

picows parses frames in C and calls back per frame. ``MessageSocket`` turns those callbacks into whole
messages for one reader (``_next``), in order, and offers the call a faster way in: ``fast``, a callable
the call sets, takes a message inside the callback while the reader waits with nothing queued, so no task
is woken for it (True: handled; False: queued as usual, so order holds). An exception it raises reaches
the reader, as if the reader had handled the message. Writes go out at once (``send_now``) unless the
transport has paused writing (the peer reads slowly): ``_wait_writable`` waits for it to resume.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class MessageSocket(WSListener):
    text_only = False  # binary messages are dropped (the Realtime protocol is text)
    limit: int | None = None  # a message in fragments past it is cut to limit + 1 bytes (the reader refuses it)

    def __init__(self) -> None:
        self._transport: WSTransport | None = None
        self._socket: asyncio.Transport | None = None
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0
        self._skipping = False  # the rest of a message already cut
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._closed = False  # a close frame came or went, or the connection is gone: nothing more is read
        self._close_sent = False
        self._failure: BaseException | None = None
        self.close_code: int | None = None  # the peer's close frame, if one came
        self.close_reason = ""
        self.fast: Callable[[bytes], bool] | None = None

    # -- picows' callbacks ---------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._socket = transport.underlying_transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT or kind is _BINARY:
            if frame.fin:  # nearly every message: one whole frame
                if kind is TEXT or not self.text_only:
                    self._deliver(frame.get_payload_as_bytes())
                return
            self._fragments = [frame.get_payload_as_bytes()]  # the first of a message's frames
            self._fragment_bytes = frame.payload_size
            self._skipping = kind is _BINARY and self.text_only
            if not self._skipping:
                self._cut_if_too_big(fin=False)
        elif kind is _CONTINUATION:
            if self._skipping:
                self._skipping = not frame.fin
                return
            if not self._fragments:
                return  # no message started (picows refuses that before it gets here)
            self._fragments.append(frame.get_payload_as_bytes())
            self._fragment_bytes += frame.payload_size
            if self._cut_if_too_big(fin=frame.fin) or not frame.fin:
                return
            whole = b"".join(self._fragments)
            self._fragments = []
            self._deliver(whole)
        elif kind is _CLOSE:
            code = frame.get_close_code()
            self.close_code, self.close_reason = code.value, frame.get_close_reason()
            self._closed = True
            if not self._close_sent:
                self._close_sent = True
                transport.send_close(code, frame.get_close_message())
            transport.disconnect()
            self._wake()

    def _cut_if_too_big(self, *, fin: bool) -> bool:
        limit = self.limit
        if limit is None or self._fragment_bytes <= limit:
            return False
        self._deliver(b"".join(self._fragments)[: limit + 1])
        self._fragments, self._skipping = [], not fin
        return True

    def _deliver(self, data: bytes) -> None:
        fast = self.fast
        waiter = self._waiter
        if fast is not None and waiter is not None and not waiter.done() and not self._messages:
            try:
                if fast(data):
                    return
            except Exception as exc:  # noqa: BLE001 - raised to the reader, as if it had handled the message
                self._failure = exc
        self._messages.append(data)
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    # -- for the socket's reader and writers -----------------------------------------------------

    async def _next(self) -> bytes | None:
        """The next message, in order; None once the connection is closed and every message was read."""
        messages = self._messages
        while not messages:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._failure is not None:
            failure, self._failure = self._failure, None
            messages.clear()
            raise failure
        return messages.popleft()

    @property
    def writable(self) -> bool:
        """A message sent now goes out at once (``send_now``)."""
        socket = self._socket
        return not (self._paused or self._closed or self._close_sent or socket is None or socket.is_closing())

    def send_now(self, data: bytes | str, *, paused_ok: bool = False) -> bool:
        """Write a text message now if the socket takes it (False: it did not, nothing was sent).

        ``paused_ok``: write it even though the transport paused writing (it buffers it): for the rest of
        what one message handled at once sends, when the socket was ``writable`` as it began."""
        transport, socket = self._transport, self._socket
        if (self._paused and not paused_ok) or self._closed or self._close_sent or transport is None or socket is None:
            return False
        if socket.is_closing():  # a write already failed: the loss is on its way to on_ws_disconnected
            return False
        transport.send(TEXT, data)
        return True

    async def _wait_writable(self) -> None:
        while self._paused and not self._closed:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed

    def _send_close(self, code: int, reason: str = "") -> None:
        transport = self._transport
        if transport is None or self._close_sent or transport.is_disconnected:
            return
        self._close_sent = True
        transport.send_close(WSCloseCode(code), reason.encode()[:123])
        transport.disconnect()  # flushes the close frame first
