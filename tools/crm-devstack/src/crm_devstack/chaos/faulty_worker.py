"""A service's worker with a crash built into its relay or consumers: the chaos run's faults.

    python -m crm_devstack.chaos.faulty_worker [--relay-exit-after-publish] [--consumer-exit-after N] SERVICE

runs ``crm-service SERVICE worker`` with its components wrapped (``crm_devstack.chaos.crashing``):
the relay dies after Kafka confirmed a batch and before the rows are marked sent, a consumer
after its N-th applied event and before the offset commit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crm_devstack.chaos.crashing import install
from crm_kit.cli import main as crm_service


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_devstack.chaos.faulty_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", help="the service whose worker to run")
    parser.add_argument("--relay-exit-after-publish", action="store_true",
                        help="the relay dies after Kafka confirmed a batch, before marking it sent")
    parser.add_argument("--consumer-exit-after", type=int, default=0, metavar="N",
                        help="a consumer dies after N applied events, before its offset commit")
    args = parser.parse_args(argv)
    install(relay_exit_after_publish=args.relay_exit_after_publish, consumer_exit_after=args.consumer_exit_after)
    return crm_service([args.service, "worker"])


if __name__ == "__main__":
    sys.exit(main())
