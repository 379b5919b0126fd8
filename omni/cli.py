"""The ``omni`` command.

``omni serve [--config FILE] [--host H] [--ws-port N] [--http-port N] [--data-dir DIR]
[--node NAME]`` runs one server in one ``trio.run`` until SIGINT or SIGTERM, then shuts down
gracefully. It stores everything in PostgreSQL: the server at ``OMNI_DATABASE_URL`` if that is
set, else an embedded one in the data directory (default ``./omni-data``), started and stopped
with the server. It registers as a node named ``--node``, else ``OMNI_NODE``, else ``[server.
cluster] node``, else a generated name, which the banner prints (docs/scale-out.md).

The admin API is the source of truth for services, groups, schedules, operators, parameters and
API tokens. A ``--config`` file supplies the ``[server]`` settings, and bootstraps the rest
only into a store that has no configuration yet; ``omni import-config FILE`` imports a file's
resources on purpose (each change audited). ``omni migrate`` applies the database migrations.

Problems are reported in one line: a bad configuration exits with status 2, an unusable
database or data directory with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

import trio

from omni.config import Config, ConfigError, load_config, parse_config
from omni.server import import_items, open_server, open_store, tune_gc
from omni.store import StoreError

log = logging.getLogger("omni")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni", description="Omni web-chat contact center")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config",
        help="TOML file: [server] settings; its resources bootstrap an empty store only",
    )
    serve.add_argument("--host", help="address to listen on (default: the file's, else 127.0.0.1)")
    serve.add_argument("--ws-port", type=int, help="websocket port (0: any free port)")
    serve.add_argument("--http-port", type=int, help="HTTP port (0: any free port)")
    serve.add_argument(
        "--node",
        help="this node's name among the nodes on one database (default: OMNI_NODE, else "
        "[server.cluster] node, else generated)",
    )
    serve.add_argument("--log-level", default="INFO")
    importer = sub.add_parser(
        "import-config", help="import a TOML file's resources into the store (audited)"
    )
    importer.add_argument("file", help="TOML configuration file")
    for command in (
        serve,
        importer,
        sub.add_parser("migrate", help="apply database migrations and exit"),
    ):
        command.add_argument(
            "--data-dir",
            default="omni-data",
            help="embedded PostgreSQL data directory, when OMNI_DATABASE_URL is not set "
            "(default: ./omni-data)",
        )
    args = parser.parse_args(argv)
    database_url = os.environ.get("OMNI_DATABASE_URL") or None
    if args.command == "migrate":
        logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        try:
            applied = trio.run(_migrate, database_url, args.data_dir)
        except StoreError as exc:
            print(f"omni: {exc}", file=sys.stderr)
            return 1
        print(
            f"omni: applied migrations {applied}" if applied else "omni: the schema is up to date"
        )
        return 0

    if args.command == "import-config":
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        try:
            config = load_config(args.file)
        except ConfigError as exc:
            print(f"omni: {exc}", file=sys.stderr)
            return 2
        try:
            changed = trio.run(_import, config, database_url, args.data_dir)
        except BaseException as exc:  # one line for what a user can fix; re-raise the rest
            if (bad := _find(exc, ConfigError)) is not None:
                print(f"omni: {args.file}: {bad}", file=sys.stderr)
                return 2
            if (problem := _user_problem(exc)) is not None:
                print(f"omni: {problem}", file=sys.stderr)
                return 1
            raise
        print(
            f"omni: imported {changed} changed resource(s) of {len(config.items)} from {args.file}"
        )
        return 0

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every pg_ctl call
    try:
        config = load_config(args.config) if args.config else parse_config({})
    except ConfigError as exc:
        print(f"omni: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    try:
        trio.run(_serve, config, args, database_url)
    except BaseException as exc:  # one line for the errors a user can fix; re-raise the rest
        problem = _user_problem(exc)
        if problem is None:
            raise
        print(f"omni: {problem}", file=sys.stderr)
        return 1
    return 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _find(inner, kind)) is not None:
                return found
        return None
    return exc if isinstance(exc, kind) else None


def _user_problem(exc: BaseException) -> str | None:
    """The message of a database or listening problem inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _user_problem(inner)) is not None:
                return found
        return None
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot listen: {exc}"
    return None


async def _import(config: Config, database_url: str | None, data_dir: str) -> int:
    from datetime import UTC, datetime

    from omni.domain.configuration import ConfigInvalid, build_directory

    async with open_store(database_url, data_dir) as store:
        # The file must fit with what the store already holds, not only on its own.
        merged = {(i.kind, i.key): i for i in await store.config_items()}
        merged.update({(i.kind, i.key): i for i in config.items})
        try:
            build_directory(merged.values())
        except ConfigInvalid as exc:
            raise ConfigError(
                f"the configuration after this import would be invalid: {exc}"
            ) from None
        return await import_items(store, config.items, datetime.now(UTC))


async def _migrate(database_url: str | None, data_dir: str) -> list[int]:
    from omni.store.embedded import open_embedded_postgres
    from omni.store.postgres import migrate

    if database_url:
        return await migrate(database_url)
    async with open_embedded_postgres(data_dir) as dsn:
        return await migrate(dsn)


async def _serve(config: Config, args: argparse.Namespace, database_url: str | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as guard:
            await _serve_until_signalled(config, args, database_url, signals, guard)
            # A signal still queued when the receiver closes would be delivered again, with
            # its default action: the process would die at the end of a clean shutdown.
            guard.cancel_scope.cancel()
    print("omni: stopped", flush=True)


async def _serve_until_signalled(
    config: Config,
    args: argparse.Namespace,
    database_url: str | None,
    signals: AsyncIterator[int],
    guard: trio.Nursery,
) -> None:
    """Serve until the first signal; then shut down, with ``guard`` taking any further one."""
    async with (
        open_store(database_url, args.data_dir) as store,
        open_server(
            config,
            store=store,
            host=args.host,
            ws_port=args.ws_port,
            http_port=args.http_port,
            data_dir=args.data_dir,
            node=args.node or os.environ.get("OMNI_NODE") or None,
        ) as server,
    ):
        ops = (
            "/healthz, /metrics"
            if server.ops_url is None
            else f"/healthz; /metrics, /docs and /openapi.json on {server.ops_url} only"
        )
        assert server.node is not None
        # Scripts read this line (the URLs): add to its end only.
        print(
            f"omni: serving websockets on {server.ws_url}/ws/visitor and /ws/operator, "
            f"HTTP on {server.http_url} ({ops}), as node {server.node.name}",
            flush=True,
        )
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            break
        guard.start_soon(_already_stopping, signals)


async def _already_stopping(signals: AsyncIterator[int]) -> None:
    """Further signals while shutting down: noted, the shutdown goes on."""
    async for signum in signals:
        log.info("received %s again; already shutting down", signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
