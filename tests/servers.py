"""Real servers on free ports for tests: uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from arena.config import NO_LIMITS, registry_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, health: str = "/", port: int | None = None) -> Iterator[str]:
    """Run an ASGI app on `port` (a free one by default); yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + health, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"server on port {port} did not start") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


DEMO_MODELS = {
    "demo-terse": "terse",
    "demo-verbose": "verbose",
    "demo-reasoner": "reasoner",
    "demo-thinker": "thinker",
}


def demo_config_data(
    url: str, models: dict[str, str] | None = None, **arena: Any
) -> dict[str, Any]:
    """A registry over the demo server; `models` maps public name to demo model id."""
    models = models or DEMO_MODELS
    return {
        "arena": {"title": "Test Arena", "demo": True, **arena},
        "timeouts": {"connect": 2, "first_token": 10, "between_tokens": 10, "total": 30},
        # Tests run the ratings job themselves; no child process per started server.
        "ratings": {"interval_minutes": 0},
        # Tests play many battles from one address; tests/test_security.py sets its own limits.
        "limits": NO_LIMITS,
        "models": [
            {
                "name": name,
                "organization": "Arena demo",
                "license": "Apache-2.0",
                "endpoints": [{"base_url": url + "/v1", "model": model_id}],
            }
            for name, model_id in models.items()
        ],
    }


@dataclass
class Recorder:
    chunks: list[bytes] = field(default_factory=list)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def recording_proxy(target: str, recorder: Recorder) -> Starlette:
    # A proxy must not keep cookies of its own: each browser brings and receives its own.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    client = httpx.AsyncClient(base_url=target, timeout=None, cookies=no_cookies)

    async def forward(request: Request) -> StreamingResponse:
        upstream = await client.send(
            client.build_request(
                request.method,
                request.url.path,
                params=request.query_params,
                headers=[(k, v) for k, v in request.headers.raw if k.lower() != b"host"],
                content=await request.body(),
            ),
            stream=True,
        )

        async def body() -> AsyncIterator[bytes]:
            # Decoded bytes: what a browser reads once gzip is undone.
            async for chunk in upstream.aiter_bytes():
                recorder.chunks.append(chunk)
                yield chunk

        headers = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
        }
        return StreamingResponse(
            body(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(upstream.aclose),
        )

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    """Write the registry `data` whole, so a test gets every setting it passes."""
    path = tmp_path / "arena.toml"
    path.write_text(registry_toml(data), encoding="utf-8")
    return path
