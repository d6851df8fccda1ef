"""The ``hookway`` command: ``serve``, ``check``, ``plugins``.

Sub-commands added by plugins (``keys`` from governance...) register through the ``hookway.cli``
entry-point group: a function ``register(subparsers)`` that adds its parser and sets
``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import signal
import sys
from importlib.metadata import entry_points

import structlog

from . import __version__
from .admin import has_admin_routes, is_loopback
from .app import Gateway, configure_logging
from .config import ConfigError, load as load_config, read_file
from .plugins import discover, settings_problems

log = structlog.get_logger("hookway")


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


def _build(config_path: str, host: str | None, port: int | None, workers: int | None = None):
    config = load_config(config_path)
    if host is not None:
        config.server.host = host
    if port is not None:
        config.server.port = port
    if workers is not None:   # plugins read it (governance checks in its database when > 1)
        config.server.workers = workers
    gateway = Gateway(config)
    app = gateway.build_app()
    if has_admin_routes(app) and not config.server.admin_token and not is_loopback(config.server.host):
        raise ConfigError(f"server.host: {config.server.host} is not a loopback address and the "
                          "management API has no server.admin_token; set one (32+ characters, "
                          "e.g. admin_token: env.HOOKWAY_ADMIN_TOKEN) or serve on 127.0.0.1")
    return config, gateway, app


def _tune_gc() -> None:
    """Garbage collection for a server process whose app is built. Requests allocate and free many
    objects, almost all by reference counting, yet with the default young-generation threshold
    (700) their bursts start a collection every few dozen requests, each walking every live
    request's objects: about 5% of a translated stream's CPU. A threshold ten times higher makes
    those collections rare, and the objects of the built app (modules, plugins, config), frozen,
    are never walked again by the full collections."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(7000, older, oldest)


def _serve_one(config_path: str, host: str | None, port: int | None, reuse_port: bool,
               built=None, workers: int | None = None) -> int:
    from aiohttp import web
    try:
        config, gateway, app = built or _build(config_path, host, port, workers)
    except ConfigError as exc:
        print(f"hookway: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.server.log_level, config.server.log_format)
    for warning in config.warnings or []:
        log.warning("config_warning", detail=warning)
    loop, loop_name = _new_loop()
    asyncio.set_event_loop(loop)
    log.info("serving", host=config.server.host, port=config.server.port, loop=loop_name,
             pid=os.getpid(), config=config_path, version=__version__)
    _tune_gc()
    try:
        web.run_app(app, host=config.server.host, port=config.server.port, reuse_port=reuse_port,
                    handler_cancellation=True, access_log=None, print=None, loop=loop,
                    shutdown_timeout=10)
    except OSError as exc:   # port in use, address not available...
        print(f"hookway: cannot serve on {config.server.host}:{config.server.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    return 0


def cmd_serve(args) -> int:
    try:  # validate once up front so a bad config fails fast with one message
        built = _build(args.config, args.host, args.port, args.workers)
    except ConfigError as exc:
        print(f"hookway: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or built[0].server.workers
    if workers <= 1:
        return _serve_one(args.config, args.host, args.port, reuse_port=False, built=built)
    # Each worker builds its own gateway after the fork (its own sessions, stores and loop).
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_serve_one, args=(args.config, args.host, args.port, True, None, workers),
                         daemon=False)
             for _ in range(workers)]
    for p in procs:
        p.start()

    def stop(signum, _frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)


def _uninstalled_plugins(config_path: str) -> list[str]:
    """Plugins a config names that are not installed (reported with the core problems)."""
    try:
        raw = read_file(config_path)
    except ConfigError:
        return []
    installed = discover()
    names = list(raw.get("plugins") or {}) if isinstance(raw.get("plugins"), dict) else []
    for bundle in (raw.get("bundles") or {}).values() if isinstance(raw.get("bundles"), dict) else []:
        names += list(bundle or {}) if isinstance(bundle, dict) else []
    return [f"plugins.{n}: plugin {n!r} is not installed (install the package hookway-{n})"
            for n in dict.fromkeys(names) if n not in installed]


def _plugin_settings_problems(config_path: str) -> list[str]:
    """Plugin settings that break their schemas, found even when the core config has problems,
    so one run of ``check`` lists both."""
    try:
        return settings_problems(read_file(config_path))
    except ConfigError:
        return []


def cmd_check(args) -> int:
    try:
        config, gateway, _app = _build(args.config, None, None)
    except ConfigError as exc:
        problems = list(exc.problems)
        more = _uninstalled_plugins(args.config) + _plugin_settings_problems(args.config)
        problems += [p for p in dict.fromkeys(more)
                     if not any(p.split(":")[0] == q.split(":")[0] for q in problems)]
        print(f"{args.config}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    for warning in config.warnings or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: ok ({len(gateway.adapters)} provider(s), "
          f"{len(gateway.plugins.global_names)} plugin(s), {len(gateway.plugins.bundles)} bundle(s))")
    return 0


def cmd_plugins(args) -> int:
    installed = discover()
    enabled: set[str] = set()
    if args.config:
        try:
            config = load_config(args.config)
            enabled = set(config.plugins) | {n for b in config.bundles.values() for n in b}
        except ConfigError as exc:
            print(f"hookway: {exc}", file=sys.stderr)
            return 2
    for name, ep in sorted(installed.items()):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        mark = "enabled" if name in enabled else ("installed" if args.config else "")
        print(f"{name:16} {dist} {version:10} {mark}".rstrip())
    for name in sorted(enabled - set(installed)):
        print(f"{name:16} (not installed)   enabled")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line, plugins' sub-commands included."""
    parser = argparse.ArgumentParser(prog="hookway", description="A plugin-based AI gateway.")
    parser.add_argument("--version", action="version", version=f"hookway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", default="gateway.yaml")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT); "
                   "default: server.workers, else 1")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate a config and list every problem")
    p.add_argument("--config", default="gateway.yaml")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plugins", help="list installed plugins (and which the config enables)")
    p.add_argument("--config")
    p.set_defaults(func=cmd_plugins)

    for ep in entry_points(group="hookway.cli"):
        try:
            ep.load()(sub)
        except Exception as exc:
            print(f"hookway: cannot load command {ep.name}: {exc}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
