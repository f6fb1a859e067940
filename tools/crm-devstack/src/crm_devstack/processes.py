"""Low-level process helpers shared by the broker, the PostgreSQL cluster and the stack.

Every child we start gets its own session (so its process group id equals its pid):
signals go to the whole group, which also reaches grandchildren such as gunicorn's
workers, and a Ctrl-C at the terminal does not hit the children before we stop them
in order.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from .errors import DevstackError

_PR_SET_PDEATHSIG = 1


class Process(Protocol):
    """What the helpers here need of a started process: ``subprocess.Popen`` has it, and so has a
    process forked from the fork server (``crm_devstack.forked.ForkedProcess``)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def tail_file(path: Path, lines: int = 40, *, start: int = 0) -> str:
    """Return the last `lines` lines of a text file from byte offset `start` on.

    Missing or unreadable files give a short note instead of an exception, because this
    is only ever called while building an error message.
    """
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if start > size:  # the file was truncated or rotated since
                start = 0
            # Reading the last 256 KiB is enough for any sensible number of lines.
            fh.seek(max(start, size - 256 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    except OSError as exc:
        return f"({path} cannot be read: {exc})"
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    if not text:
        return f"({path} is empty)"
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended, naming the signal when it was killed by one."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def pid_alive(pid: int) -> bool:
    """Return True when `pid` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the command name, which is in parentheses and may
    # itself contain spaces or parentheses.
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"]


def pid_cmdline(pid: int) -> list[str]:
    """Return the command line of `pid`, or [] when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def read_pid_file(path: Path) -> int | None:
    """Return the pid stored in `path`, or None when the file is missing or malformed."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; return False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_exit(target: Process | int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for a process to end; return True when it has.

    A Process (a Popen, or a fork the fork server reports on) is waited for (a Popen
    is also reaped); a bare pid, a process some other program started, is polled.
    """
    if not isinstance(target, int):
        try:
            target.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(target):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate_group(target: Process | int, timeout: float) -> bool:
    """Stop a process started in its own session: SIGTERM its group, then SIGKILL.

    Returns True when it ended within `timeout` seconds of SIGTERM, False when it had
    to be killed. Never waits more than `timeout` + 10 seconds.
    """
    pid = target if isinstance(target, int) else target.pid
    if not isinstance(target, int) and target.poll() is not None:
        # The leader is gone; make sure nothing it left in its group survives.
        signal_group(pid, signal.SIGKILL)
        return True
    signal_group(pid, signal.SIGTERM)
    if wait_exit(target, timeout):
        signal_group(pid, signal.SIGKILL)  # stragglers of the group, if any
        return True
    signal_group(pid, signal.SIGKILL)
    wait_exit(target, 10)
    return False


def die_with_parent() -> Callable[[], None]:
    """Return a preexec_fn that makes the child get SIGTERM when its parent dies.

    Children live in their own sessions, so nothing else would stop them if the
    supervising process were killed with SIGKILL; Linux's PR_SET_PDEATHSIG does.
    """
    parent = os.getpid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # not Linux: no safety net, nothing else changes
        return lambda: None

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then nobody would
        # ever send the signal, so act on it now.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return _preexec


def run_command(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    tail_lines: int = 40,
) -> str:
    """Run a command to completion in its own session and return its output.

    Output (stdout and stderr together) goes to `log_path` when given (appended), else
    to a temporary file. On a missing executable, a non-zero exit or `timeout`, raises
    DevstackError naming `what` and showing the last lines of the output. The command's
    whole process group is killed on timeout or when the caller is interrupted.
    """
    out: IO[bytes]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")
    else:
        out = tempfile.TemporaryFile()
    with out:
        start_offset = out.seek(0, os.SEEK_END)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise DevstackError(f"{what}: executable not found: {argv[0]}") from exc
        except PermissionError as exc:
            raise DevstackError(f"{what}: cannot execute {argv[0]}: {exc}") from exc
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate_group(proc, 5)
            output = _read_from(out, log_path, start_offset, tail_lines)
            raise DevstackError(
                f"{what} did not finish within {timeout:g} s and was killed.\n"
                f"command: {' '.join(argv)}\nlast output:\n{output}"
            ) from None
        except BaseException:
            terminate_group(proc, 5)
            raise
        output = _read_from(out, log_path, start_offset, tail_lines)
        if returncode != 0:
            where = f" (full output in {log_path})" if log_path else ""
            raise DevstackError(
                f"{what} failed ({describe_exit(returncode)}).\n"
                f"command: {' '.join(argv)}\nlast output{where}:\n{output}"
            )
        return output


def _read_from(out: IO[bytes], log_path: Path | None, start: int, lines: int) -> str:
    if log_path is not None:
        out.flush()
        return tail_file(log_path, lines, start=start)
    out.seek(start)
    text = out.read().decode("utf-8", errors="replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) if text else "(no output)"
