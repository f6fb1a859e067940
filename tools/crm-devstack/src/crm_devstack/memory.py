"""How much memory a set of process trees takes, honestly: PSS and RSS from /proc (Linux).

RSS counts every page a process maps, so pages shared by several processes (the Python
interpreter's code, libraries, and everything a gunicorn master shares with its forked
workers) are counted once per process: the sum of RSS over a platform overstates what it
costs. PSS (proportional set size) splits each shared page among the processes that map
it: summed over every process of the platform it is what the platform really takes (pages
shared with processes outside it count only in part). Both come from
``/proc/<pid>/smaps_rollup``.

A *group* is a named set of root pids (``kafka``, ``leads-api``, ``leads-worker`` ...);
each root counts with all of its descendants (a gunicorn master with its workers), except
descendants that are roots of their own (a supervisor's children have their own groups).

``python -m crm_devstack memory`` prints the table for a platform started by ``make run``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PROC = Path("/proc")
MB = 1024 * 1024


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory in bytes."""

    pid: int
    command: str
    rss: int
    pss: int
    private: int  # USS: pages only this process maps (Private_Clean + Private_Dirty)


@dataclass(frozen=True)
class GroupMemory:
    """The processes of one group and their sums."""

    name: str
    processes: tuple[ProcessMemory, ...]

    @property
    def rss(self) -> int:
        return sum(p.rss for p in self.processes)

    @property
    def pss(self) -> int:
        return sum(p.pss for p in self.processes)

    @property
    def count(self) -> int:
        return len(self.processes)


@dataclass(frozen=True)
class Snapshot:
    """Every group at one moment."""

    groups: tuple[GroupMemory, ...]
    taken_at: float = field(default_factory=time.time)

    @property
    def rss(self) -> int:
        return sum(g.rss for g in self.groups)

    @property
    def pss(self) -> int:
        return sum(g.pss for g in self.groups)

    @property
    def count(self) -> int:
        return sum(g.count for g in self.groups)

    def group(self, name: str) -> GroupMemory:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """Megabytes, per group and in total (for JSON reports)."""
        return {
            "pss_mb": round(self.pss / MB, 1), "rss_mb": round(self.rss / MB, 1), "processes": self.count,
            "groups": {g.name: {"pss_mb": round(g.pss / MB, 1), "rss_mb": round(g.rss / MB, 1),
                                "processes": g.count} for g in self.groups},
        }

    def table(self) -> str:
        """A fixed-width table: one line per group, then the total."""
        lines = [f"{'group':<24} {'processes':>9} {'PSS MB':>9} {'RSS MB':>9}"]
        for g in self.groups:
            lines.append(f"{g.name:<24} {g.count:>9} {g.pss / MB:>9.1f} {g.rss / MB:>9.1f}")
        lines.append(f"{'total':<24} {self.count:>9} {self.pss / MB:>9.1f} {self.rss / MB:>9.1f}")
        return "\n".join(lines)


def _parse_rollup(text: str) -> dict[str, int]:
    """The ``Name: <n> kB`` lines of smaps(_rollup), summed per name, in bytes."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            values[name] = values.get(name, 0) + int(parts[0]) * 1024
    return values


def process_memory(pid: int) -> ProcessMemory | None:
    """``pid``'s memory, or None when it is gone (or a zombie, or a kernel thread: no memory)."""
    try:
        try:
            text = (PROC / str(pid) / "smaps_rollup").read_text()
        except FileNotFoundError:
            # Kernels before 4.14 have no rollup: the per-mapping file sums to the same.
            if not (PROC / str(pid)).exists():
                return None
            text = (PROC / str(pid) / "smaps").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    values = _parse_rollup(text)
    if "Rss" not in values:
        return None
    command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return ProcessMemory(pid, command, values["Rss"], values.get("Pss", values["Rss"]),
                         values.get("Private_Clean", 0) + values.get("Private_Dirty", 0))


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name sits in parentheses and may itself hold spaces or parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(root: int, children: Mapping[int, list[int]], stop_at: Iterable[int] = ()) -> list[int]:
    """``root`` and its descendants, not descending into the pids in ``stop_at``."""
    stop = set(stop_at) - {root}
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(child for child in children.get(pid, ()) if child not in stop)
    return found


def measure(roots: Mapping[str, Iterable[int]]) -> Snapshot:
    """The memory of each named group of process trees, now.

    Each pid counts once: in the group of its nearest root. A root that is gone adds
    nothing (its group shows 0 processes).
    """
    children = children_by_parent()
    all_roots = {pid for pids in roots.values() for pid in pids}
    seen: set[int] = set()
    groups = []
    for name, pids in roots.items():
        processes = []
        for root in pids:
            for pid in tree(root, children, all_roots):
                if pid in seen:
                    continue
                seen.add(pid)
                memory = process_memory(pid)
                if memory is not None:
                    processes.append(memory)
        groups.append(GroupMemory(name, tuple(processes)))
    return Snapshot(tuple(groups))


def peak(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The snapshot with the largest total PSS."""
    return max(snapshots, key=lambda s: s.pss)


def sample_while(roots: Callable[[], Mapping[str, Iterable[int]]], action: Callable[[], T], *,
                 interval: float = 1.0) -> tuple[T, list[Snapshot]]:
    """Run ``action`` while another thread measures ``roots()`` every ``interval`` seconds.

    Returns what ``action`` returned and the snapshots (at least one, taken at its end).
    """
    snapshots: list[Snapshot] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            snapshots.append(measure(roots()))

    sampler = threading.Thread(target=sample, name="memory-sampler", daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    snapshots.append(measure(roots()))
    return result, snapshots


def stack_roots(state_file: Path, supervisor_pid: int | None = None) -> dict[str, list[int]]:
    """The groups of a platform started by ``make run``, from its state file (``.run/stack.json``):
    the supervisor itself, Kafka, and each api and worker (with their children)."""
    state = json.loads(state_file.read_text())
    roots: dict[str, list[int]] = {}
    supervisor = supervisor_pid or state.get("pid")
    if isinstance(supervisor, int):
        roots["devstack (supervisor)"] = [supervisor]
    if isinstance(state.get("kafka_pid"), int):
        roots["kafka"] = [state["kafka_pid"]]
    for name, pid in state.get("children", {}).items():
        if isinstance(pid, int):
            roots[name] = [pid]
    return roots

