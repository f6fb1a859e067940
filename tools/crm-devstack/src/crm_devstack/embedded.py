"""``make run``'s platform started in a throwaway folder on free ports: ``python -m crm_devstack
start`` there (embedded Kafka, SQLite, every api and worker forked from the fork server, the
gateway and the console), stopped and removed on the way out. For figure 10 of ``make bench``
(``bench.memory_figure``) and the test of ``make run`` (``tests/e2e/test_make_run.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from crm_devstack.errors import DevstackError
from crm_devstack.memory import stack_roots
from crm_devstack.ports import free_port
from crm_devstack.stack import DEFAULT_API_PORTS, DEFAULT_WORKER_PORTS, StackConfig

SECRET = "embedded-stack-secret-long-enough-for-hs256"  # noqa: S105 - a throwaway local platform


@dataclass(frozen=True)
class RunningStack:
    config: StackConfig
    pid: int
    log_path: Path

    def roots(self) -> dict[str, list[int]]:
        return stack_roots(self.config.state_file, self.pid)


def _repo_kafka_cache() -> Path:
    from crm_devstack.stack import find_repo_root

    configured = os.environ.get("CRM_KAFKA_CACHE")
    return Path(configured) if configured else find_repo_root() / ".run" / "kafka-cache"


@contextlib.contextmanager
def embedded_stack(env: Mapping[str, str] | None = None, *, log: Callable[[str], None] = print,
                   ready_timeout: float = 300) -> Iterator[RunningStack]:
    """``python -m crm_devstack start`` in a temporary folder on free ports (plus ``env``); stopped
    and removed on the way out. Raises ``DevstackError`` with the end of its log if it does not start."""
    root = Path(tempfile.mkdtemp(prefix="crm-embedded-"))
    ports = {f"CRM_{name.upper()}_PORT": str(free_port()) for name in DEFAULT_API_PORTS}
    ports |= {f"CRM_{name.upper()}_WORKER_PORT": str(free_port()) for name in DEFAULT_WORKER_PORTS}
    ports |= {"CRM_KAFKA_PORT": str(free_port()), "CRM_KAFKA_CONTROLLER_PORT": str(free_port())}
    full_env = {**os.environ, **ports, "CRM_REPO_ROOT": str(root), "CRM_KAFKA_CACHE": str(_repo_kafka_cache()),
                "CRM_JWT_SECRET": SECRET, "CRM_RATE_LIMIT": "1000000/second", **(env or {})}
    config = StackConfig.from_environment(root, full_env)
    command = [sys.executable, "-m", "crm_devstack"]
    log_path = root / "start.log"
    try:
        with open(log_path, "wb") as out:
            started = subprocess.run([*command, "start", "--ready-timeout", str(ready_timeout)], env=full_env,
                                     cwd=root, stdout=out, stderr=subprocess.STDOUT, timeout=ready_timeout + 600,
                                     check=False)
        if started.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise DevstackError(f"the local platform (make run) did not start:\n{tail}")
        pid = int(config.pid_file.read_text())
        yield RunningStack(config, pid, log_path)
    finally:
        subprocess.run([*command, "stop"], env=full_env, cwd=root, capture_output=True, timeout=120, check=False)
        shutil.rmtree(root, ignore_errors=True)
