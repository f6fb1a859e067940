"""crm_devstack.memory on real processes: this test process and small children it starts.

No timing: every child says on stdout when its memory is in place, and waits on stdin until
the test has measured it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crm_devstack import memory
from crm_devstack.memory import MB, measure, process_memory, sample_while, stack_roots

ALLOCATED = 64 * MB

# Fills ALLOCATED bytes (every page touched), optionally forks so that parent and child share
# them, prints the pids and waits for stdin to close.
_HOLDER = """
import os, sys
block = bytearray(b"x") * int(sys.argv[1])
if sys.argv[2] == "fork" and os.fork() == 0:
    os.write(1, f"{os.getpid()}\\n".encode())  # one write each: the two lines never interleave
    sys.stdin.read()
    os._exit(0)
os.write(1, f"{os.getpid()}\\n".encode())
sys.stdin.read()
"""


Holder = Callable[..., tuple["subprocess.Popen[str]", list[int]]]


@pytest.fixture
def holder() -> Iterator[Holder]:
    started: list[subprocess.Popen[str]] = []

    def start(mode: str = "alone") -> tuple[subprocess.Popen[str], list[int]]:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(ALLOCATED), mode], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        pids = [int(proc.stdout.readline()) for _ in range(2 if mode == "fork" else 1)]
        return proc, pids

    yield start
    for proc in started:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_this_process_has_rss_and_pss_and_a_command():
    me = process_memory(os.getpid())
    assert me is not None
    assert me.pid == os.getpid()
    assert "python" in me.command or "pytest" in me.command
    assert 0 < me.private <= me.pss <= me.rss


def test_a_child_counts_in_the_tree_of_its_parent_with_the_memory_it_filled(holder):
    _, (child,) = holder()
    snapshot = measure({"tests": [os.getpid()]})
    pids = {p.pid for p in snapshot.group("tests").processes}
    assert {os.getpid(), child} <= pids
    counted = next(p for p in snapshot.group("tests").processes if p.pid == child)
    assert counted.rss >= ALLOCATED and counted.pss >= ALLOCATED and counted.private >= ALLOCATED
    assert snapshot.pss == snapshot.group("tests").pss >= ALLOCATED


def test_a_process_counts_once_in_the_group_of_its_nearest_root(holder):
    proc, (child,) = holder()
    snapshot = measure({"tests": [os.getpid()], "holder": [proc.pid]})
    assert child not in {p.pid for p in snapshot.group("tests").processes}
    assert [p.pid for p in snapshot.group("holder").processes] == [child]
    assert snapshot.count == snapshot.group("tests").count + 1


def test_pages_shared_after_a_fork_count_once_in_pss_and_twice_in_rss(holder):
    proc, pids = holder("fork")
    snapshot = measure({"holder": [proc.pid]})
    assert sorted(p.pid for p in snapshot.group("holder").processes) == sorted(pids)
    assert snapshot.rss >= 2 * ALLOCATED  # every process counts the block it maps
    assert ALLOCATED <= snapshot.pss < snapshot.rss - ALLOCATED // 2  # shared: split between the two


def test_a_process_that_is_gone_adds_nothing():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert process_memory(proc.pid) is None
    snapshot = measure({"gone": [proc.pid]})
    assert snapshot.group("gone").count == 0 and snapshot.pss == snapshot.rss == 0


def test_the_rollup_parser_sums_the_kb_lines_in_bytes():
    text = ("00400000-7ffd0000 ---p 00000000 00:00 0 [rollup]\nRss:  2048 kB\nPss:  1024 kB\n"
            "Private_Clean: 10 kB\nPrivate_Dirty: 20 kB\nVmFlags: rd wr\n")
    assert memory._parse_rollup(text) == {"Rss": 2048 * 1024, "Pss": 1024 * 1024, "Private_Clean": 10 * 1024,
                                          "Private_Dirty": 20 * 1024}


def test_the_groups_of_a_stack_come_from_its_state_file(tmp_path: Path):
    state = tmp_path / "stack.json"
    state.write_text(json.dumps({"pid": 11, "kafka_pid": 12, "children": {"leads-api": 13, "leads-worker": 14}}))
    assert stack_roots(state) == {"devstack (supervisor)": [11], "kafka": [12], "leads-api": [13],
                                  "leads-worker": [14]}
    state.write_text(json.dumps({"pid": 11, "kafka_pid": None, "children": {}}))
    assert stack_roots(state, supervisor_pid=21) == {"devstack (supervisor)": [21]}


def test_sampling_while_an_action_runs_returns_its_result_and_a_snapshot_at_its_end(holder):
    # A holder, not this process: in the whole suite pytest's process has children (Kafka, ...)
    _proc, pids = holder()
    result, snapshots = sample_while(lambda: {"holder": pids}, lambda: 42, interval=60)
    assert result == 42
    assert len(snapshots) == 1 and snapshots[0].group("holder").count == 1


def test_the_table_and_the_json_name_every_group_and_the_total(holder):
    proc, _ = holder()
    snapshot = measure({"tests": [os.getpid()], "holder": [proc.pid]})
    lines = snapshot.table().splitlines()
    assert [line.split()[0] for line in lines] == ["group", "tests", "holder", "total"]
    data = snapshot.as_dict()
    assert set(data["groups"]) == {"tests", "holder"}
    assert data["processes"] == snapshot.count
    assert data["pss_mb"] >= ALLOCATED / MB and data["rss_mb"] >= data["pss_mb"]


def test_the_memory_command_says_when_no_stack_runs(tmp_path: Path):
    (tmp_path / "Makefile").touch()
    (tmp_path / "services").mkdir()
    done = subprocess.run([sys.executable, "-m", "crm_devstack", "memory"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "CRM_REPO_ROOT": str(tmp_path)})
    assert done.returncode == 1
    assert "no stack is running" in done.stdout
