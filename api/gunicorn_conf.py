"""gunicorn settings that its command line cannot express (`-c python:api.gunicorn_conf`)."""

import socket

from hearth.cli import configure_logging
from hearth.settings import Settings


def when_ready(server):
    # Accepted connections inherit the listener's send buffer. A bounded one
    # (the kernel would grow it to megabytes) makes a client that stops
    # reading block its stream soon, so the send timeout can drop it.
    size = Settings.from_env().send_buffer_bytes
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def post_worker_init(worker):
    # gunicorn configures only its own loggers: without this the API's (a job queued, a client
    # gone, a job cancelled) are dropped, and a hung request cannot be traced from the API's side.
    configure_logging(Settings.from_env().log_level)
