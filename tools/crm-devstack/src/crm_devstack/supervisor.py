"""Start, watch and stop a set of named child processes (the local platform's services)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests

from .errors import DevstackError
from .processes import Process, describe_exit, die_with_parent, signal_group, tail_file, terminate_group

# Signals after which a child is expected to be gone: check() does not report it.
_ENDING_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


Spawn = Callable[[Sequence[str], Mapping[str, str] | None, IO[bytes], Path | None], Process]
"""Starts a program (argv, complete environment or None, the log to append to, cwd) in a session of
its own, or raises OSError: ``subprocess.Popen`` by default, ``crm_devstack.forked`` for forks."""


@dataclass
class _Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None
    log_path: Path
    cwd: Path | None
    spawn: Spawn | None = None
    pass_fds: tuple[int, ...] = ()
    proc: Process | None = None
    # True once we stopped or deliberately signalled it: its exit is no failure.
    exit_expected: bool = False
    # Where the current run's output starts in the (appended) log.
    log_offset: int = 0


class ProcessGroup:
    """Named child processes, each in its own process group, output to its own log.

    A child's whole process group is signalled, so a gunicorn master and its workers
    stop together. With `die_with_parent` (the default) the children get SIGTERM if
    this process dies, even by SIGKILL, so a crashed supervisor leaves nothing behind.
    Linux ties that signal to the thread that started the child: use a ProcessGroup
    from the main thread (or another thread that outlives its children).
    """

    def __init__(self, *, die_with_parent: bool = True) -> None:
        self._children: dict[str, _Child] = {}
        self._die_with_parent = die_with_parent

    def add(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log_path: Path,
        cwd: Path | None = None,
        *,
        spawn: Spawn | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> Process:
        """Start `argv` as child `name` and return its Popen (or what `spawn` returned).

        `env` is the child's complete environment (None: inherit ours). Output
        (stdout and stderr) is appended to `log_path` after a header line. `spawn`
        starts it instead of `subprocess.Popen` (and again on a restart); `pass_fds`
        are kept open in a Popen's child. Raises DevstackError when the name is taken
        or the program cannot be executed.
        """
        if name in self._children:
            raise DevstackError(f"A child named {name!r} already exists in this process group.")
        child = _Child(name, list(argv), dict(env) if env is not None else None, Path(log_path), cwd, spawn,
                       tuple(pass_fds))
        self._spawn(child)
        self._children[name] = child
        return child.proc  # type: ignore[return-value]

    def names(self) -> list[str]:
        """The children's names in the order they were added."""
        return list(self._children)

    def pid(self, name: str) -> int | None:
        """The pid (and process group id) of child `name` while it runs, else None."""
        proc = self._get(name).proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def pids(self) -> dict[str, int]:
        """Pids of the children that are running now, by name."""
        return {name: pid for name in self._children if (pid := self.pid(name)) is not None}

    def is_running(self, name: str) -> bool:
        """Return True while child `name` is alive."""
        return self.pid(name) is not None

    def log_path(self, name: str) -> Path:
        """The log file of child `name`."""
        return self._get(name).log_path

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last `lines` lines child `name` wrote since it was last (re)started."""
        child = self._get(name)
        return tail_file(child.log_path, lines, start=child.log_offset)

    def check(self) -> None:
        """Raise DevstackError if a child has exited that nobody stopped or signalled.

        The message names the child, how it ended and the last lines of its log.
        """
        for child in self._children.values():
            proc = child.proc
            if proc is None or child.exit_expected or proc.poll() is None:
                continue
            raise DevstackError(
                f"{child.name} (pid {proc.pid}) exited unexpectedly ({describe_exit(proc.returncode)}).\n"
                f"--- last lines of {child.log_path} ---\n{self.log_tail(child.name)}"
            )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to child `name`'s process group (fault injection, reloads).

        After SIGKILL, SIGTERM, SIGINT or SIGQUIT the child's exit counts as expected:
        check() does not report it; restart() brings it back.
        """
        child = self._get(name)
        if child.proc is None or child.proc.poll() is not None:
            raise DevstackError(f"{name} is not running.")
        if sig in _ENDING_SIGNALS:
            child.exit_expected = True
        signal_group(child.proc.pid, sig)

    def stop(self, name: str, timeout: float = 10) -> None:
        """Stop child `name`: SIGTERM to its group, SIGKILL after `timeout` seconds."""
        child = self._get(name)
        child.exit_expected = True
        if child.proc is not None:
            terminate_group(child.proc, timeout)

    def restart(self, name: str, timeout: float = 10, *,
                env: Mapping[str, str] | None = None) -> Process:
        """Stop child `name` if it runs, start it again with the same command; return the new Popen.

        `env`, when given, is the child's new complete environment, for this run and later ones.
        """
        self.stop(name, timeout)
        child = self._get(name)
        if env is not None:
            child.env = dict(env)
        self._spawn(child)
        return child.proc  # type: ignore[return-value]

    def stop_all(self, timeout: float = 10) -> None:
        """Stop every child: SIGTERM all groups at once, SIGKILL what is left after `timeout`.

        Children are signalled newest first (the gateway before the services it calls),
        but all at once, so stopping N children takes one timeout, not N.
        """
        children = list(self._children.values())[::-1]
        for child in children:
            child.exit_expected = True
            if child.proc is not None and child.proc.poll() is None:
                signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            if child.proc is not None:
                terminate_group(child.proc, max(deadline - time.monotonic(), 0))

    def _get(self, name: str) -> _Child:
        try:
            return self._children[name]
        except KeyError:
            raise DevstackError(f"No child named {name!r} (known: {', '.join(self._children) or 'none'}).") from None

    def _spawn(self, child: _Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as log:
            child.log_offset = log.seek(0, os.SEEK_END)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} starting {child.name}: {' '.join(child.argv)} ===\n".encode())
            log.flush()
            try:
                if child.spawn is not None:
                    child.proc = child.spawn(child.argv, child.env, log, child.cwd)
                else:
                    child.proc = subprocess.Popen(
                        child.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=child.env,
                        cwd=child.cwd,
                        start_new_session=True,
                        preexec_fn=die_with_parent() if self._die_with_parent else None,
                        pass_fds=child.pass_fds,
                    )
            except OSError as exc:
                raise DevstackError(f"Cannot start {child.name}: {' '.join(child.argv)}: {exc}") from exc
        child.exit_expected = False


def wait_http_ok(
    url: str,
    timeout: float,
    expect: int = 200,
    *,
    interval: float = 0.25,
    check: Callable[[], None] | None = None,
) -> requests.Response:
    """Poll GET `url` until it answers status `expect`; return that response.

    `check` runs between attempts (e.g. ProcessGroup.check) so that waiting stops at
    once when the process behind the URL has died. Raises DevstackError after
    `timeout` seconds, saying what the last attempt got.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        try:
            response = requests.get(url, timeout=max(min(2.0, remaining), 0.2))
            if response.status_code == expect:
                return response
            last = f"HTTP {response.status_code}: {response.text[:300].strip()}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        if check is not None:
            check()
        if time.monotonic() + interval > deadline:
            raise DevstackError(f"{url} did not answer {expect} within {timeout:g} s (last attempt: {last}).")
        time.sleep(interval)
