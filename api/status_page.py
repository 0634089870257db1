"""The live status page: `/status` (and `/`), updated over SSE, with nothing loaded from elsewhere.

The page is three static files (api/status_page/); its data is one snapshot
of Redis (hearth/status.py) sent every second on `/status/events`, also at
`/status/snapshot` as JSON. Prompts appear only with `?prompts=1`. With API
keys set, the page and its stream take the key as `?key=`, since a browser's
EventSource cannot send headers.
"""

import json
from pathlib import Path

import anyio
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.shutdown import shutting_down
from hearth import status

PAGE = Path(__file__).parent / "status_page"
INTERVAL = 1.0


def wants_prompts(request: Request) -> bool:
    return request.query_params.get("prompts") in ("1", "true", "yes")


async def page(request: Request):
    return FileResponse(PAGE / "index.html")


async def home(request: Request):
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse("/status" + query, status_code=307)


async def snapshot(request: Request):
    now = await run_in_threadpool(status.snapshot, request.app.state.jobs.connection, 12, wants_prompts(request))
    return JSONResponse(now)


async def events(request: Request):
    redis, prompts = request.app.state.jobs.connection, wants_prompts(request)

    async def frames():
        while not shutting_down():
            now = await run_in_threadpool(status.snapshot, redis, 12, prompts)
            yield {"event": "snapshot", "data": json.dumps(now, separators=(",", ":"))}
            await anyio.sleep(INTERVAL)

    return EventSourceResponse(frames(), send_timeout=request.app.state.settings.send_timeout)


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/status", page, methods=["GET"]),
    Route("/status/snapshot", snapshot, methods=["GET"]),
    Route("/status/events", events, methods=["GET"]),
    Mount("/status/assets", app=StaticFiles(directory=PAGE), name="status-assets"),
]
