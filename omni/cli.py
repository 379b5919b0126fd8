"""The ``omni`` command.

``omni serve --config FILE [--host H] [--ws-port N] [--http-port N]`` runs one server in one
``trio.run`` until SIGINT or SIGTERM, then shuts down gracefully. Problems with the
configuration are reported in one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from omni.config import ConfigError, load_config
from omni.server import open_server

log = logging.getLogger("omni")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omni", description="Omni web-chat contact center")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", required=True, help="TOML configuration file")
    serve.add_argument("--host", help="address to listen on (default: the file's, else 127.0.0.1)")
    serve.add_argument("--ws-port", type=int, help="websocket port (0: any free port)")
    serve.add_argument("--http-port", type=int, help="HTTP port (0: any free port)")
    serve.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"omni: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_serve, config, args)
    except OSError as exc:
        print(f"omni: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(config: object, args: argparse.Namespace) -> None:
    from omni.config import Config

    assert isinstance(config, Config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(
            config, host=args.host, ws_port=args.ws_port, http_port=args.http_port
        ) as server:
            print(
                f"omni: serving websockets on {server.ws_url}/ws/visitor and /ws/operator, "
                f"HTTP on {server.http_url} (/healthz, /metrics)",
                flush=True,
            )
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
    print("omni: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
