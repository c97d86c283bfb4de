"""Real servers on free ports for tests: uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, health: str = "/") -> Iterator[str]:
    """Run an ASGI app on a free port; yield its base URL."""
    port = free_port()
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
