"""The `arena` command: serve, run, db, ratings, import, export and helpers."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from arena.config import DEMO_CONFIG, ModelEntry, Settings, load_config
from arena.errors import ApiParameterError, ArenaError

log = logging.getLogger("arena")

DEMO_HOST = "127.0.0.1"
DEMO_PORT = 8765
# How long `arena serve` keeps an idle connection open: longer than a balancer's own idle
# timeout for its connections to the arena (deploy/nginx/arena.conf, 30 s), so that the
# balancer closes first and never sends a request down a connection being closed.
KEEP_ALIVE_SECONDS = 75


# Each stops `arena serve` and `arena run` the same way: uvicorn shuts down, then every
# `finally` runs (the demo model server, a child of `arena run`, is stopped in one).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal turned into an exception, so that cleanup runs; the exit status is
    128 + the signal's number, as a shell reports a process the signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    # While uvicorn serves, it handles SIGINT and SIGTERM itself: a graceful shutdown, then it
    # raises the signal again, which lands here. SIGHUP it ignores, so hand SIGHUP to it too.
    serving = signal.getsignal(signal.SIGTERM)
    if signum == signal.SIGHUP and callable(serving) and serving is not _on_stop_signal:
        serving(signum, frame)
        return
    raise Stopped(signum)


@contextmanager
def _stop_signals() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Request lines add noise per token stream; endpoint failures are logged by the provider.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> None:
    with _stop_signals():
        _serve(args)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from arena.app import create_app

    settings = Settings.from_env()
    app = create_app(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"Arena ({len(app.config.models)} models) on http://{host}:{port}", flush=True)
    uvicorn.run(
        app.asgi,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # Arena reads X-Forwarded-For itself, and only from `[security] trusted_proxies`
        # (arena.identity); uvicorn's default would believe it from 127.0.0.1 unasked.
        proxy_headers=False,
    )


def cmd_demo_models(args: argparse.Namespace) -> None:
    import uvicorn

    from arena.demo_models import BANNER, MODELS, REWARD_MODELS, create_demo_app

    app = create_demo_app(latency=args.latency, tokens_per_second=args.tps)
    print(f"{BANNER}\n  models: {', '.join(MODELS)}", flush=True)
    print(f"  reward models (/classify, /pooling): {', '.join(REWARD_MODELS)}", flush=True)
    print(f"  http://{args.host}:{args.port}/v1  (latency {args.latency}s, {args.tps} tok/s)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _demo_health(url: str) -> dict[str, Any] | None:
    """The /health answer of the demo model server at `url`; None if none answers there."""
    try:
        body = httpx.get(f"{url}/health", timeout=0.5).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("demo") else None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((DEMO_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def cmd_run(args: argparse.Namespace) -> None:
    """Demo models in a child process, then the arena in this one. Any stop signal, or an
    error, stops the child before this process exits."""
    from arena import db

    with _stop_signals():
        settings = Settings.from_env()
        load_config(settings.config_path)  # fail before starting anything
        before, after = db.upgrade(settings.database_url)
        if before != after:  # `make run` upgraded it already; a plain `arena run` says so
            print(_upgraded(settings.database_url, before, after), flush=True)
        child = _start_demo(args.demo_port)
        try:
            _serve(args)
        finally:
            if child is not None:
                _stop_child(child)


def _start_demo(port: int) -> subprocess.Popen[bytes] | None:
    """Start the demo model server on `port` and wait until it answers; None if one is
    already running there."""
    url = f"http://{DEMO_HOST}:{port}"
    found = _demo_health(url)
    if found is not None:
        log.warning(
            "reusing the demo model server already running at %s (process %s): this run did "
            "not start it and will not stop it",
            url,
            found.get("pid", "unknown"),
        )
        return None
    if _listening(port):
        raise ArenaError(
            f"port {port} is taken by something that is not the demo model server: stop it, "
            "or start with --demo-port P and a registry whose endpoints use port P"
        )
    child = subprocess.Popen([sys.executable, "-m", "arena", "demo-models", "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while _demo_health(url) is None:
            if child.poll() is not None or time.monotonic() > deadline:
                raise ArenaError(f"the demo model server did not start on port {port}")
            time.sleep(0.2)
    except BaseException:
        _stop_child(child)
        raise
    return child


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s; stop signals wait until the child is gone."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def cmd_cluster(args: argparse.Namespace) -> None:
    """Migrate once, then N `arena serve` processes behind nginx until a stop signal."""
    from arena import cluster, db

    if args.processes < 1:
        raise ArenaError("--processes must be at least 1")
    with _stop_signals():
        settings = Settings.from_env()
        load_config(settings.config_path)  # fail before starting anything
        # With the shipped demo registry, its models are started too, as `arena run` does:
        # trying a cluster needs nothing else (docs/deploy.md).
        demo = settings.config_path.resolve() == DEMO_CONFIG.resolve()
        if settings.database_url.startswith("sqlite"):
            log.warning("several processes on SQLite work, but PostgreSQL is the deployment path")
        if settings.redis_url is None:
            log.warning("without ARENA_REDIS_URL each process counts the rate limits on its own")
        before, after = db.upgrade(settings.database_url)
        if before != after:
            print(_upgraded(settings.database_url, before, after), flush=True)
        child = _start_demo(DEMO_PORT) if demo else None
        try:
            cluster.run(args.processes, args.port, args.first_port)
        finally:
            if child is not None:
                _stop_child(child)


def cmd_db(args: argparse.Namespace) -> None:
    from arena import db

    url = Settings.from_env().database_url
    if args.action == "upgrade":
        print(_upgraded(url, *db.upgrade(url)))
    elif args.action == "downgrade":
        before, after = db.downgrade(url, args.revision)
        where = f"database at {db.safe_url(url)}"
        if before == after:
            print(f"{where}: already at revision {after or 'base'}")
        else:
            print(f"{where}: downgraded from revision {before} to {after or 'base (no tables)'}")


def _upgraded(url: str, before: str | None, after: str | None) -> str:
    """What an upgrade to the newest migration did, in one line."""
    from arena.db import safe_url

    where = f"database at {safe_url(url)}"
    if before is None:
        return f"new {where}: created every table, now up to date at revision {after}"
    if before == after:
        return f"{where}: already up to date at revision {after}"
    return f"{where}: upgraded from revision {before} to {after}, now up to date"


def cmd_check_config(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    config = load_config(settings.config_path)
    print(f"{config.source}: OK, {len(config.models)} models")
    for m in config.models:
        print(f"  {_entry_summary(m)}")


def _entry_summary(m: ModelEntry) -> str:
    """One registry entry on one line: what makes it a contestant of its own (issue 7)."""
    flags = "".join(
        f" ({x})" for x, on in (("unreleased", m.unreleased), ("retired", m.retired)) if on
    )
    parts = [f"weight {m.weight:g}", f"{len(m.endpoints)} endpoint(s)"]
    if m.api != "openai":
        parts.append(f"api {m.api}")
    if m.family != m.name:
        parts.append(f"family {m.family}")
    if m.params:
        parts.append(", ".join(f"{k}={v!r}" for k, v in sorted(m.params.items())))
    if m.thinking_budget is not None:
        parts.append(f"thinking budget {m.thinking_budget} as {m.thinking_budget_field}")
    if (s := m.strategy) is not None:
        how = f"{s.kind} of {s.n}"
        if s.temperature is not None:
            how += f" at temperature {s.temperature:g}"
        if s.kind == "process_reward":
            how += f", {s.aggregate} of step scores"
        if s.reward is not None:
            how += f", reward model {s.reward.model} ({s.reward.api})"
        parts.append(how)
    return f"{m.name}{flags}: " + "; ".join(parts)


def _engine_and_config() -> tuple[Any, Any]:
    from arena.db import check_current, make_engine

    settings = Settings.from_env()
    config = load_config(settings.config_path)
    engine = make_engine(settings.database_url)
    check_current(engine)
    return engine, config


def cmd_ratings(args: argparse.Namespace) -> None:
    import threading
    from datetime import timedelta

    from arena.jobs import Lease, holder_id
    from arena.ratings_job import compute

    engine, config = _engine_and_config()
    lease = None
    stop = threading.Event()
    if not args.no_lease:
        lease = Lease(engine, "ratings", holder_id(), timedelta(minutes=5))
        if not lease.acquire():
            holder, until = lease.holder_now() or ("?", None)
            when = until.strftime("%H:%M UTC") if until else "soon"
            raise ArenaError(
                f"a ratings run is in progress (process {holder}); its lease runs until {when}, "
                "so a run that died blocks new runs until then"
            )
        held = lease

        def keep() -> None:  # renewed while the run lasts, as in `arena serve`
            while not stop.wait(held.ttl.total_seconds() / 3):
                held.renew()

        threading.Thread(target=keep, daemon=True).start()
    try:
        result = compute(engine, config, force=args.force)
    finally:
        stop.set()
        if lease is not None:
            lease.release()
    if result.run_id is None:
        print(
            "nothing written: there are no votes yet, or none since the last snapshot with the "
            "same settings (--force writes one anyway)"
        )
        return
    removed = ", ".join(f"{s['name']} {s['removed']}" for s in result.stages if s["removed"])
    print(
        f"{result.snapshots} snapshots written in {result.seconds:.1f} s: "
        f"{result.votes_counted} of {result.votes_total} votes counted"
        + (f" (removed: {removed})" if removed else "")
    )


def cmd_categories(args: argparse.Namespace) -> None:
    from arena.categories import CategoryRules, RuleTagger
    from arena.store import Store

    engine, config = _engine_and_config()
    tagger = RuleTagger(CategoryRules(long_prompt_chars=config.ratings.long_prompt_chars))
    count = Store(engine).backfill_categories(tagger, only_missing=not args.all)
    print(f"tagged {count} battles")
    if count:
        # New tags are not new votes: the job would see nothing to do.
        print("run `arena ratings compute --force` to rate the categories with them")


def cmd_import(args: argparse.Namespace) -> None:
    from arena.categories import CategoryRules, RuleTagger
    from arena.transfer import import_file

    engine, config = _engine_and_config()
    tagger = RuleTagger(CategoryRules(long_prompt_chars=config.ratings.long_prompt_chars))
    report = import_file(engine, config, Path(args.file), fmt=args.format, tagger=tagger)
    print(f"{args.file}: {report.summary()}")


def cmd_export(args: argparse.Namespace) -> None:
    engine, config = _engine_and_config()
    fmt = args.format or "json"
    if args.what == "leaderboard":
        if fmt not in ("json", "csv"):
            raise ArenaError("the leaderboard is written as json or csv")
        text = _leaderboard_text(engine, config, args, fmt)  # fails before any file is touched
        _write_out(args.file, lambda out: out.write(text))
        return
    from arena.interchange import write_battles
    from arena.store import Store
    from arena.transfer import all_battles

    rows = all_battles(
        engine,
        include_content=args.include_content or config.export.include_content,
        salt=Store(engine).secret("export_salt"),
    )
    count = _write_out(args.file, lambda out: write_battles(rows, out, fmt))
    print(f"exported {count} battles", file=sys.stderr)


def _write_out(path: str, write: Any) -> Any:
    """Write to standard output, or to `path` through a temporary file renamed at the end, so
    a failure never leaves a half-written (or emptied) file."""
    import os
    import tempfile

    if path == "-":
        try:
            result = write(sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        return result
    target = Path(path)
    if target.is_dir():
        raise ArenaError(f"{path} is a directory; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as err:
        raise ArenaError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            result = write(out)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return result


def _leaderboard_text(engine: Any, config: Any, args: argparse.Namespace, fmt: str) -> str:
    import json

    from arena.leaderboard import SnapshotReader, leaderboard_document, rows_csv

    reader = SnapshotReader(engine)
    snap = reader.latest(args.category, args.style_control)
    if snap is None:
        known = reader.categories()
        raise ArenaError(
            f"no snapshot for category {args.category!r}"
            + (f" (known: {', '.join(known)})" if known else ": run `arena ratings compute`")
        )
    doc = leaderboard_document(engine, config, snap)
    if fmt == "csv":
        return rows_csv(doc["rows"]).decode("utf-8")
    return json.dumps(doc, indent=1) + "\n"


def cmd_admin(args: argparse.Namespace) -> None:
    from arena import admin
    from arena.app import ip_salt
    from arena.identity import Identity
    from arena.store import Store

    if args.action in ("reload", "ratings") and args.url:
        _admin_request(args.url, args.action)
        return
    engine, config = _engine_and_config()  # a registry that does not load stops here
    store = Store(engine)
    settings = Settings.from_env()
    try:
        if args.action == "review":
            from arena.leaderboard import SnapshotReader

            doc = admin.review_document(store, SnapshotReader(engine).latest())
            print(json.dumps(doc, indent=1))
        elif args.action == "reload":
            from arena.app import RELOAD_POLL, announce_reload

            announce_reload(store)
            print(
                f"{config.source}: {len(config.models)} models; every arena process on this "
                f"database reloads within {RELOAD_POLL:g} s"
            )
        elif args.action == "ratings":
            args.force, args.no_lease = True, False
            cmd_ratings(args)
        elif args.action.endswith(("-battle", "-voter")):
            verb, what = args.action.split("-")
            reason = None
            if verb == "flag":
                reason = admin.reason_text(args.reason) or admin.DEFAULT_REASON
            set_flag = admin.flag_battle if what == "battle" else admin.flag_voter
            set_flag(store, args.id, reason)
            print(f"{what} {args.id}: {verb}ged")
        elif args.action in ("ban", "unban"):
            hasher = Identity(secret_key=b"", ip_salt=ip_salt(settings, store))
            ip_hash = hasher.ip_hash(admin.check_ip(args.ip))
            assert ip_hash is not None
            if args.action == "ban":
                new = store.ban_ip(ip_hash, admin.reason_text(args.reason))
                state = "banned" if new else "already banned"
                print(f"{state}: {args.ip} (stored as {ip_hash[:12]}…)")
            else:
                gone = store.unban_ip(ip_hash)
                print(f"{'unbanned' if gone else 'was not banned'}: {args.ip}")
    except ApiParameterError as err:
        raise ArenaError(str(err)) from None
    finally:
        engine.dispose()


def _admin_request(url: str, action: str) -> None:
    token = os.environ.get("ARENA_ADMIN_TOKEN")
    if not token:
        raise ArenaError("set ARENA_ADMIN_TOKEN to the running arena's admin token")
    target = f"{url.rstrip('/')}/api/v1/admin/{action}"
    try:
        response = httpx.post(target, headers={"authorization": f"Bearer {token}"}, timeout=60)
    except httpx.HTTPError as err:
        raise ArenaError(f"cannot reach {url}: {type(err).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    if response.status_code >= 400:
        raise ArenaError(f"{target}: {response.status_code}: {body.get('error', body)}")
    print(json.dumps(body))


def cmd_settings(args: argparse.Namespace) -> None:
    from arena.config import settings_markdown, settings_table

    if args.markdown:
        print(settings_markdown())
        return
    section = None
    for s in settings_table():
        if s.section != section:
            section = s.section
            print(f"[{section}]")
        print(f"  {s.name} = {s.default!r}  # {s.help}")
    print("[ratings.options]  # ratings.RatingOptions, see docs/ratings.md")


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
    run.add_argument(
        "--demo-port",
        type=int,
        default=DEMO_PORT,
        help=f"port of the demo models (default {DEMO_PORT}); the registry's endpoints use it",
    )
    run.set_defaults(func=cmd_run)

    clu = sub.add_parser(
        "cluster", help="several arena processes behind nginx on this machine (docs/deploy.md)"
    )
    clu.add_argument("--processes", type=int, default=2, help="arena processes (default 2)")
    clu.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    clu.add_argument(
        "--first-port", type=int, default=8001, help="the first arena process's port (8001)"
    )
    clu.set_defaults(func=cmd_cluster)

    dbp = sub.add_parser("db", help="database migrations")
    dbsub = dbp.add_subparsers(dest="action", required=True)
    dbsub.add_parser("upgrade", help="apply all migrations")
    down = dbsub.add_parser("downgrade", help="revert to a revision")
    down.add_argument("revision")
    dbp.set_defaults(func=cmd_db)

    check = sub.add_parser("check-config", help="validate the model registry and exit")
    check.set_defaults(func=cmd_check_config)

    settings = sub.add_parser("settings", help="list every setting of arena.toml")
    settings.add_argument("--markdown", action="store_true", help="as docs/configuration.md")
    settings.set_defaults(func=cmd_settings)

    rat = sub.add_parser("ratings", help="the ratings job")
    ratsub = rat.add_subparsers(dest="action", required=True)
    compute = ratsub.add_parser("compute", help="rate the votes once and write snapshots")
    compute.add_argument("--force", action="store_true", help="write even if nothing changed")
    compute.add_argument("--no-lease", action="store_true", help=argparse.SUPPRESS)
    rat.set_defaults(func=cmd_ratings)

    cat = sub.add_parser("categories", help="category tags of battles")
    catsub = cat.add_subparsers(dest="action", required=True)
    backfill = catsub.add_parser("backfill", help="tag battles stored before tagging existed")
    backfill.add_argument("--all", action="store_true", help="retag every battle")
    cat.set_defaults(func=cmd_categories)

    imp = sub.add_parser("import", help="import votes from a clean-battle JSON, JSONL or CSV file")
    imp.add_argument("file")
    imp.add_argument("--format", choices=["json", "jsonl", "csv"], help="default: from content")
    imp.set_defaults(func=cmd_import)

    exp = sub.add_parser("export", help="write battles or the leaderboard to a file")
    exp.add_argument("what", choices=["battles", "leaderboard"])
    exp.add_argument("file", help="output path, or - for standard output")
    exp.add_argument("--format", choices=["json", "jsonl", "csv"], help="default: json")
    exp.add_argument("--include-content", action="store_true", help="prompts and answers too")
    exp.add_argument("--category", default="overall", help="leaderboard category")
    exp.add_argument("--style-control", action="store_true", help="the style-controlled board")
    exp.set_defaults(func=cmd_export)
    adm = sub.add_parser("admin", help="flag, ban, reload the registry, run the ratings")
    admsub = adm.add_subparsers(dest="action", required=True)
    for what in ("battle", "voter"):
        flag = admsub.add_parser(f"flag-{what}", help=f"leave a {what}'s votes out of the ratings")
        flag.add_argument("id")
        flag.add_argument("--reason", default="", help="kept with the flag")
        unflag = admsub.add_parser(f"unflag-{what}", help=f"clear a {what}'s flag")
        unflag.add_argument("id")
    ban = admsub.add_parser("ban", help="refuse prompts and votes from an IP (stored hashed)")
    ban.add_argument("ip")
    ban.add_argument("--reason", default="")
    unban = admsub.add_parser("unban", help="lift a ban")
    unban.add_argument("ip")
    reload = admsub.add_parser(
        "reload", help="make every running arena on this database reload its model registry"
    )
    reload.add_argument("--url", help="ask one arena over HTTP instead (ARENA_ADMIN_TOKEN)")
    admsub.add_parser("review", help="what the integrity checks found (names voter ids)")
    runr = admsub.add_parser("ratings", help="run the ratings now (here, or in the arena at --url)")
    runr.add_argument("--url", help="ask the running arena to run them")
    adm.set_defaults(func=cmd_admin)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # a closed pipe shows here, not in the interpreter's last flush
            sys.stdout.flush()
    except BrokenPipeError:  # `arena ... | head`: the reader has what it wanted
        # Python flushes standard output once more at exit: let that write go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # 141, as a shell reports a command SIGPIPE ended


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    _logging()
    try:
        args.func(args)
    except ArenaError as err:
        print(f"arena: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Stopped as stop:
        return 128 + stop.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
