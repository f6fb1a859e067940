"""Command line: python -m crm_devstack run|start|stop|status|memory|token."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import DevstackError
from .stack import (
    DEV_JWT_SECRET,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    LocalStack,
    StackConfig,
    make_token,
    stack_memory,
    stack_status,
    start_detached,
    stop_stack,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crm_devstack",
        description="The local CRM platform: Kafka plus every service's api and worker, state in .run/.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start everything in the foreground; Ctrl-C stops it all")
    start = commands.add_parser("start", help="start everything in the background and return once ready")
    for sub in (run, start):
        sub.add_argument(
            "--ready-timeout",
            type=float,
            default=READY_TIMEOUT,
            metavar="SECONDS",
            help=f"how long to wait for the gateway's /readyz (default {READY_TIMEOUT:g})",
        )
    stop = commands.add_parser("stop", help="stop a stack started by run or start, and its leftovers")
    stop.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait before killing (default {STOP_TIMEOUT:g})",
    )
    commands.add_parser("status", help="show which parts are up (exit 0 when all are)")
    memory = commands.add_parser(
        "memory", help="print the memory (PSS and RSS) of a running stack, per process group and in total"
    )
    memory.add_argument("--json", action="store_true", help="print JSON (megabytes) instead of a table")
    token = commands.add_parser(
        "token", help="print a signed dev JWT (HS256, secret $CRM_JWT_SECRET or the dev default)"
    )
    token.add_argument("--user", default="dev-user", help="the `sub` claim (default dev-user)")
    token.add_argument("--name", default="Dev User", help="the `name` claim (default 'Dev User')")
    token.add_argument("--office", default="office-1", help="the `office` claim (default office-1)")
    token.add_argument("--roles", default="admin", help="comma-separated roles (default admin)")
    token.add_argument("--ttl", type=int, default=86400, metavar="SECONDS", help="lifetime (default 86400)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "token":
            roles = [role.strip() for role in args.roles.split(",") if role.strip()]
            secret = os.environ.get("CRM_JWT_SECRET") or DEV_JWT_SECRET
            print(make_token(secret, user=args.user, name=args.name, office=args.office, roles=roles, ttl=args.ttl))
            return 0
        config = StackConfig.from_environment()
        if args.command == "run":
            return LocalStack(config).run(ready_timeout=args.ready_timeout)
        if args.command == "start":
            return start_detached(config, ready_timeout=args.ready_timeout)
        if args.command == "stop":
            return stop_stack(config, timeout=args.timeout)
        if args.command == "memory":
            return stack_memory(config, as_json=args.json)
        return stack_status(config)
    except DevstackError as exc:
        print(f"[devstack] error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
