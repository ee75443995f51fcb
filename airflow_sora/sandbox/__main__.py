"""``python -m airflow_sora.sandbox --port 8765 --account demo-key=1000``: run the sandbox until stopped."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from dataclasses import fields

from airflow_sora.sandbox.faults import Faults
from airflow_sora.sandbox.server import SandboxServer
from airflow_sora.sandbox.state import SandboxConfig

DEFAULT_ACCOUNTS = ["sandbox-kie-key=100000", "sandbox-savesora-key=10000"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_sora.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    parser.add_argument("--account", action="append", metavar="KEY=CREDITS",
                        help=f"API key and balance; repeatable (default: {' '.join(DEFAULT_ACCOUNTS)})")
    parser.add_argument("--faults", default="{}", help='fault switches as JSON, e.g. \'{"server_error": '
                        '{"rate": 0.1}, "error_style": "status"}\'')
    parser.add_argument("--port-file", help="write the bound port here once listening")
    for spec in fields(SandboxConfig):
        if spec.name in ("webhook_key", "seed"):
            parser.add_argument(f"--{spec.name.replace('_', '-')}", default=None,
                                type=int if spec.name == "seed" else str)
        else:
            parser.add_argument(f"--{spec.name.replace('_', '-')}", type=type(spec.default), default=spec.default)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sandbox %(message)s")
    config = SandboxConfig(**{spec.name: getattr(args, spec.name) for spec in fields(SandboxConfig)})
    server = SandboxServer(config, host=args.host, port=args.port,
                           faults=Faults.model_validate(json.loads(args.faults)))
    for item in args.account or DEFAULT_ACCOUNTS:
        key, _, credits = item.partition("=")
        server.add_account(key, float(credits or 1000))
    server.start()
    if args.port_file:
        with open(args.port_file, "w") as handle:
            handle.write(str(server.port))
    print(f"Sora sandbox (Kie.ai + SaveSora) listening on {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
