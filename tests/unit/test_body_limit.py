"""BodyLimit and the header deadline on a real uvicorn server and real sockets.

The manager's own limits are driven end to end in ``tests/e2e/test_resource_limits.py``;
here, with a short body deadline: a body too slow is answered 408, a streamed answer
longer than the deadline is not cut (the deadline covers the body only), and a body
within its limit reaches the route whole.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from seawall.body_limit import BodyLimit
from seawall.localsites import free_port
from seawall.serving import Server, limited_config

LIMIT_BYTES = 1024
BODY_TIMEOUT_S = 1.0


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.get("/slow-stream")
    async def slow_stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(BODY_TIMEOUT_S)
                yield b"x" * 10

        return StreamingResponse(chunks())

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    app = BodyLimit(make_app(), lambda _path: LIMIT_BYTES, body_timeout_s=BODY_TIMEOUT_S)
    server = Server(limited_config(app, host="127.0.0.1", port=port), handle_signals=False)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_body_within_its_limit_reaches_the_route(url: str) -> None:
    answer = httpx.post(f"{url}/echo", content=b"y" * LIMIT_BYTES)
    assert answer.json() == {"length": LIMIT_BYTES}
    over = httpx.post(f"{url}/echo", content=b"y" * (LIMIT_BYTES + 1))
    assert over.status_code == 413 and over.json()["code"] == "too_large"


def test_a_body_too_slow_is_answered_408(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        sock.settimeout(BODY_TIMEOUT_S + 5)
        started_s = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "request_timeout"
    assert time.monotonic() - started_s < BODY_TIMEOUT_S + 2


def test_a_streamed_answer_outlasts_the_body_deadline(url: str) -> None:
    answer = httpx.get(f"{url}/slow-stream", timeout=30)
    assert answer.status_code == 200 and answer.content == b"x" * 30
