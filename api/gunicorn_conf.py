"""gunicorn settings that its command line cannot express (`-c python:api.gunicorn_conf`)."""

import socket

from hearth.settings import Settings


def when_ready(server):
    # Accepted connections inherit the listener's send buffer. A bounded one
    # (the kernel would grow it to megabytes) makes a client that stops
    # reading block its stream soon, so the send timeout can drop it.
    size = Settings.from_env().send_buffer_bytes
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
