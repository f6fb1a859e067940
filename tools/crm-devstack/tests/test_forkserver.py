"""The fork server (``make run`` starts the services as forks of one process that imported their
libraries): a real crm-service api served by gunicorn inside a fork, exits reported as a Popen's
would be, forks that end with their server, and preloading that refuses per-process state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from crm_devstack.errors import DevstackError
from crm_devstack.forked import NAME, UNKNOWN_EXIT, ForkServer
from crm_devstack.ports import free_port
from crm_devstack.processes import pid_alive, pid_cmdline
from crm_devstack.stack import StackConfig, service_env
from crm_devstack.supervisor import ProcessGroup, wait_http_ok

SERVICE_BIN = Path(sys.executable).parent / "crm-service"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[tuple[ProcessGroup, ForkServer]]:
    processes = ProcessGroup()
    server = ForkServer.start(processes, tmp_path / "forkserver.log", cwd=tmp_path)
    yield processes, server
    processes.stop_all(timeout=10)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and pid_alive(int(entry.name)) and _parent(int(entry.name)) == pid]


def test_a_crm_service_api_runs_inside_its_fork_and_answers(group: tuple[ProcessGroup, ForkServer],
                                                            tmp_path: Path) -> None:
    processes, server = group
    config = StackConfig.from_environment(tmp_path, {"CRM_CATALOGUE_PORT": str(free_port()),
                                                     "CRM_CATALOGUE_WORKER_PORT": str(free_port())})
    env = {**os.environ, **service_env(config, "catalogue", "api"),
           "CRM_DATABASE_URL": f"sqlite:///{tmp_path / 'catalogue.sqlite3'}", "CRM_WEB_CONCURRENCY": "1"}
    migrated = subprocess.run([str(SERVICE_BIN), "catalogue", "migrate"], env={**env, "CRM_LOG_FORMAT": "text"},
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    bind = f"127.0.0.1:{config.api_ports['catalogue']}"
    api = processes.add("catalogue-api", [str(SERVICE_BIN), "catalogue", "api", "--bind", bind], env,
                        tmp_path / "catalogue-api.log", spawn=server.spawn)

    wait_http_ok(f"http://{bind}/healthz", 90, check=processes.check)
    forkserver = processes.pid(NAME)
    assert forkserver is not None and _parent(api.pid) == forkserver
    # Not executed but run in the fork: gunicorn's master keeps the fork server's command line.
    assert pid_cmdline(api.pid) == pid_cmdline(forkserver)
    assert len(_children(api.pid)) == 1  # its gunicorn worker, which answered
    answer = requests.get(f"http://{bind}/v1/lead-stages", timeout=10)
    assert answer.status_code == 401 and answer.headers["Content-Type"] == "application/problem+json"
    assert os.getsid(api.pid) == api.pid  # a session of its own: the group's signals reach only it

    processes.stop("catalogue-api")
    assert api.poll() == 0  # gunicorn's master stopped on SIGTERM and said so
    assert '"Shutting down: Master"' in (tmp_path / "catalogue-api.log").read_text()
    assert processes.pid(NAME) == forkserver


def test_a_fork_that_ends_on_its_own_is_reported_with_its_code_and_log(group: tuple[ProcessGroup, ForkServer],
                                                                       tmp_path: Path) -> None:
    processes, server = group
    argv = [sys.executable, "-c", "import sys; print('leaving now', flush=True); sys.exit(7)"]
    child = processes.add("leaver", argv, None, tmp_path / "leaver.log", spawn=server.spawn)
    assert child.wait(timeout=30) == 7
    with pytest.raises(DevstackError, match=r"leaver \(pid \d+\) exited unexpectedly \(exit code 7\)") as raised:
        processes.check()
    assert "leaving now" in str(raised.value)

    again = processes.restart("leaver")  # a restart goes through the fork server again
    assert again.pid != child.pid and again.wait(timeout=30) == 7
    processes.stop("leaver")  # from now on its exit is expected

    sleeper = processes.add("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], None,
                            tmp_path / "sleeper.log", spawn=server.spawn)
    processes.kill("sleeper", signal.SIGKILL)
    assert sleeper.wait(timeout=30) == -signal.SIGKILL
    processes.check()  # a deliberate kill is no failure
    with pytest.raises(subprocess.TimeoutExpired):
        processes.add("waiter", [sys.executable, "-c", "import time; time.sleep(600)"], None,
                      tmp_path / "waiter.log", spawn=server.spawn).wait(timeout=0.2)


def test_forks_end_with_their_fork_server(group: tuple[ProcessGroup, ForkServer], tmp_path: Path) -> None:
    processes, server = group
    child = processes.add("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], None,
                          tmp_path / "sleeper.log", spawn=server.spawn)
    assert child.poll() is None
    processes.kill(NAME, signal.SIGKILL)
    assert child.wait(timeout=30) == UNKNOWN_EXIT
    deadline = time.monotonic() + 30
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    with pytest.raises(DevstackError, match="fork server is gone"):
        processes.add("late", [sys.executable, "-c", "pass"], None, tmp_path / "late.log", spawn=server.spawn)


def _preload(modules: str) -> subprocess.CompletedProcess[str]:
    code = f"from crm_devstack.forkserver import preload\nprint(len(preload({modules})))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_preloading_leaves_per_process_state_to_the_forks() -> None:
    default = _preload("")
    assert default.returncode == 0, default.stderr
    assert int(default.stdout) > 40  # the list imports (a module not installed would be skipped)
    refused = _preload("('crm_kit.metrics',)")
    assert refused.returncode == 1
    assert "preloading imported crm_kit, crm_kit.metrics" in refused.stderr and "prometheus_client" in refused.stderr
