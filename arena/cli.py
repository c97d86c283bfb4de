"""The `arena` command: serve, demo-models, run, db, check-config."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx

from arena.config import Settings, load_config
from arena.errors import ArenaError

log = logging.getLogger("arena")

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 8765


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Request lines add noise per token stream; endpoint failures are logged by the provider.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from arena.app import create_app

    settings = Settings.from_env()
    app = create_app(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"Arena ({len(app.config.models)} models) on http://{host}:{port}", flush=True)
    uvicorn.run(app.asgi, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def cmd_demo_models(args: argparse.Namespace) -> None:
    import uvicorn

    from arena.demo_models import BANNER, MODELS, create_demo_app

    app = create_demo_app(latency=args.latency, tokens_per_second=args.tps)
    print(f"{BANNER}\n  models: {', '.join(MODELS)}", flush=True)
    print(f"  http://{args.host}:{args.port}/v1  (latency {args.latency}s, {args.tps} tok/s)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _demo_running(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/health", timeout=0.5).json().get("demo"))
    except (httpx.HTTPError, ValueError):
        return False


def cmd_run(args: argparse.Namespace) -> None:
    """Demo models in a child process, then the arena in this one."""
    from arena import db

    settings = Settings.from_env()
    load_config(settings.config_path)  # fail before starting anything
    db.upgrade(settings.database_url)
    url = f"http://{DEMO_HOST}:{args.demo_port}"
    child: subprocess.Popen[bytes] | None = None
    if _demo_running(url):
        print(f"Using the demo model server already running at {url}", flush=True)
    else:
        child = subprocess.Popen(
            [sys.executable, "-m", "arena", "demo-models", "--port", str(args.demo_port)]
        )
        deadline = time.monotonic() + 20
        while not _demo_running(url):
            if child.poll() is not None or time.monotonic() > deadline:
                raise ArenaError(f"the demo model server did not start on port {args.demo_port}")
            time.sleep(0.2)
    try:
        cmd_serve(args)
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()


def cmd_db(args: argparse.Namespace) -> None:
    from arena import db

    settings = Settings.from_env()
    if args.action == "upgrade":
        db.upgrade(settings.database_url)
        print("database is up to date")
    elif args.action == "downgrade":
        db.downgrade(settings.database_url, args.revision)
        print(f"database downgraded to {args.revision}")


def cmd_check_config(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    config = load_config(settings.config_path)
    print(f"{config.source}: OK, {len(config.models)} models")
    for m in config.models:
        flags = " (unreleased)" if m.unreleased else ""
        print(f"  {m.name}{flags}: weight {m.weight:g}, {len(m.endpoints)} endpoint(s)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arena", description="Judge language models by human votes.")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the arena (ARENA_CONFIG, ARENA_DATABASE_URL)")
    serve.add_argument("--host", help="default: ARENA_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: ARENA_PORT or 7860")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo-models", help="serve the demo models (OpenAI-compatible)")
    demo.add_argument("--host", default=DEMO_HOST)
    demo.add_argument("--port", type=int, default=DEMO_PORT)
    demo.add_argument("--latency", type=float, default=0.3, help="seconds before the first token")
    demo.add_argument("--tps", type=float, default=40.0, help="tokens per second (0: no delay)")
    demo.set_defaults(func=cmd_demo_models)

    run = sub.add_parser("run", help="migrate, start the demo models and serve (make run)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--demo-port", type=int, default=DEMO_PORT)
    run.set_defaults(func=cmd_run)

    dbp = sub.add_parser("db", help="database migrations")
    dbsub = dbp.add_subparsers(dest="action", required=True)
    dbsub.add_parser("upgrade", help="apply all migrations")
    down = dbsub.add_parser("downgrade", help="revert to a revision")
    down.add_argument("revision")
    dbp.set_defaults(func=cmd_db)

    check = sub.add_parser("check-config", help="validate the model registry and exit")
    check.set_defaults(func=cmd_check_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _logging()
    try:
        args.func(args)
    except ArenaError as err:
        print(f"arena: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
