"""Ending open streams with an error event when the API is told to stop.

sse-starlette ends its streams on a server shutdown, giving each frames
generator a grace period to say goodbye, but it learns of the shutdown only
from uvicorn. gunicorn's ASGI worker keeps SIGTERM to
itself (an asyncio signal handler) and waits for open connections until its
graceful timeout. So the app chains a handler in front of gunicorn's that
sets sse-starlette's flag, and each stream sends an `error` event naming
the shutdown before the connection closes.
"""

import asyncio
import signal

from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def watch_shutdown_signals():
    """Call from the app's lifespan startup, in the server's event loop."""
    loop = asyncio.get_running_loop()
    for sig in SHUTDOWN_SIGNALS:
        # asyncio keeps the server's own handler here; there is no public accessor.
        previous = getattr(loop, "_signal_handlers", {}).get(sig)

        def handler(previous=previous):
            AppStatus.should_exit = True
            if previous is not None:
                previous._callback(*previous._args)

        try:
            loop.add_signal_handler(sig, handler)
        except (RuntimeError, ValueError):
            return  # not the main thread (a test client): no signals to watch


def shutting_down() -> bool:
    return AppStatus.should_exit


def event_source(settings, frames) -> EventSourceResponse:
    """An SSE response that, on a shutdown, lets its frames run long enough to say so.

    A stream notices `shutting_down()` at its next event or quiet tick: the grace period covers one ping interval.
    """
    return EventSourceResponse(frames, send_timeout=settings.send_timeout,
                               shutdown_grace_period=settings.ping_interval + 1)
