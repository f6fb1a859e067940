"""Command line of ``make chaos``: ``python -m crm_devstack.chaos [--operations N] [--clients N]``.

Exits 0 when nothing was lost or duplicated, every public event reached the run's webhook receiver
(signed, in order per record), no client was refused (404/422) a request about its own writes and
every fault kind was injected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from crm_devstack.arguments import positive
from crm_devstack.chaos.run import ChaosConfig, own_infrastructure, run_chaos
from crm_devstack.errors import DevstackError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crm_devstack.chaos",
        description="Load the platform while Kafka, the workers, the outbox relays and PostgreSQL fail in turn; "
                    "then verify against the databases that no event or effect was lost or duplicated, and "
                    "that a webhook receiver got every public event.")
    parser.add_argument("--operations", type=positive(int, "--operations"), default=10_000,
                        help="client operations, at least (default 10000)")
    parser.add_argument("--clients", type=positive(int, "--clients"), default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' choices (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts as JSON to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs for a post-mortem")
    return parser


def _say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = ChaosConfig(operations=args.operations, clients=args.clients, seed=args.seed)
    try:
        _say("starting PostgreSQL and Kafka of this run's own")
        with own_infrastructure() as (kafka, postgres):
            _say("starting the platform")
            report = run_chaos(kafka, postgres, config, keep_logs=args.keep_logs, log=_say)
    except DevstackError as exc:
        print(f"[chaos] failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(report.render(), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
