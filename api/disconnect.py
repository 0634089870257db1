"""Knowing that a client waiting for a non-streamed answer has gone, and only then.

ASGI says it plainly: once the body is read, `receive()` returns
`http.disconnect` when the client goes away, and blocks until then. So the
waiting runs beside one `receive()` that is never cut short.

Starlette's `request.is_disconnected()` polls instead: it calls `receive()`
in a scope cancelled in advance. gunicorn 27's ASGI worker marks its body
receiver closed in a `finally` of that wait, so the cancelled poll itself
leaves every later `receive()` answering `http.disconnect`: the second poll
(five seconds in, Hearth's first quiet tick having come at once) took a
waiting client for a gone one, and its job was cancelled.
"""

import anyio


async def wait_for_disconnect(receive):
    """Return once the client has gone (after the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive, work):
    """`await work()`, or None (with `work` cancelled) if the client goes away first.

    `work`'s own exceptions come out as themselves, not in an exception group.
    """
    result = error = None
    async with anyio.create_task_group() as group:

        async def watch():
            await wait_for_disconnect(receive)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            result = await work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
            error = exc
        group.cancel_scope.cancel()
    if error is not None:
        raise error
    return result
