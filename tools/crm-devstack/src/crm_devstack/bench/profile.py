"""Where the time of a create-lead goes: ``python -m crm_devstack.bench.profile``.

Starts the bench's stack, drives ``POST /v1/leads`` through the gateway with the bench's load
generator and meanwhile

- samples the gateway's and the leads api's gunicorn workers with py-spy (``--subprocesses``,
  idle threads left out), giving flame graphs (SVG) and the raw stacks, summarised by the
  package the sampled frame is in (self time) and by our own functions (inclusive time);
- measures the CPU seconds each part of the machine used during the load (every process
  group the platform started, PostgreSQL, Kafka and the load generator itself), with the same
  code as ``make bench``'s figure 11 (``crm_devstack.bench.cpu``).

Everything goes to ``.run/bench/profile/`` and a summary is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from crm_devstack.arguments import add_load_options, positive
from crm_devstack.bench.cpu import CpuMeter, platform_parts
from crm_devstack.bench.figures import Bench, BenchPlan
from crm_devstack.bench.load import LoadError, run_load
from crm_devstack.bench.runner import bench_stack, default_output_dir, say
from crm_devstack.errors import DevstackError

PROFILED = ("gateway-api", "leads-api")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def package_of(path: str) -> str:
    """A short name for where a frame's file is: the top-level package (``psycopg``,
    ``crm_pipeline``) or ``stdlib:<module>``. py-spy names files relative to their sys.path
    entry (``psycopg/cursor.py``); full paths are handled too."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif match := re.search(r"/(?:libs|services)/[^/]+/src/(.+)$", path):
        path = match.group(1)
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    top = path.lstrip("/").split("/", 1)[0].removesuffix(".py")
    return f"stdlib:{top}" if top in sys.stdlib_module_names else top or "?"


def summarise(raw: str, top: int = 20) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's raw (collapsed) stacks: the sample count, the share of samples whose
    innermost frame is in each package (self time), and the share of samples inside each of
    our own functions (inclusive time)."""
    total = 0
    by_package: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for m in (_FRAME.match(f) for f in stack.split(";")) if m]
        if not frames:
            continue
        total += count
        by_package[package_of(frames[-1]["file"])] += count
        seen = set()
        for frame in frames:
            package = package_of(frame["file"])
            if package.startswith("crm_"):
                seen.add(f"{package}: {frame['function']}")
        for name in seen:
            ours[name] += count
    share = (lambda c: [(name, n / total) for name, n in c.most_common(top)]) if total else (lambda c: [])
    return total, share(by_package), share(ours)


def _py_spy(pid: int, seconds: float, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    binary = Path(sys.prefix) / "bin" / "py-spy"
    argv = [str(binary), "record", "--pid", str(pid), "--subprocesses", "--duration", str(int(seconds)),
            "--rate", "200", "--format", fmt, "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_profile(plan: BenchPlan, out_dir: Path, seconds: float) -> str:
    """Profile ``seconds`` of create-lead load; returns the printed summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with bench_stack(plan, out_dir, say) as stack:
        bench = Bench(plan, stack.platform, stack.postgres, stack.bootstrap, {}, stack.db_prefix, say)
        bench.setup()
        operation = bench.create_operation(f"{bench.gateway}/v1/leads", bench.writer, keep_ids=False)
        say("warming up (5 s)")
        run_load(operation, concurrency=plan.concurrency, seconds=5)
        meter = CpuMeter(platform_parts(stack.platform, stack.postgres, stack.kafka.pid if stack.kafka else None))
        spies = []
        for name in PROFILED:
            pid = stack.platform.processes.pid(name)
            if pid is None:
                raise DevstackError(f"{name} is not running")
            for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                spies.append((name, fmt, out_dir / f"{name}.{suffix}",
                              _py_spy(pid, seconds, out_dir / f"{name}.{suffix}", fmt)))
        time.sleep(1)  # py-spy attaches
        say(f"profiling {seconds:g} s of POST /v1/leads through the gateway, {plan.concurrency} connections")
        before = meter.snapshot()
        began = time.monotonic()
        result = run_load(operation, concurrency=plan.concurrency, seconds=seconds)
        wall = time.monotonic() - began
        after = meter.snapshot()
        for name, fmt, path, spy in spies:
            _out, err = spy.communicate(timeout=seconds + 60)
            if spy.returncode != 0 or not path.exists():
                raise DevstackError(f"py-spy ({fmt}) on {name} failed: {err.decode(errors='replace')[-2000:]}")
        lines.append(f"create-lead through the gateway: {result.throughput:.1f} req/s, p50 {result.p(50) * 1000:.0f} "
                     f"ms, p99 {result.p(99) * 1000:.0f} ms over {wall:.1f} s ({os.cpu_count()} CPUs)")
        lines.append("")
        lines.append("CPU used during the load, by part (CPU seconds per second of load = cores busy):")
        used = CpuMeter.used(before, after)
        total = sum(used.values())
        for name, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {name:<26} {cpu / wall:5.2f} cores  {100 * cpu / total:5.1f} %  "
                         f"{1000 * cpu / max(result.ok, 1):6.2f} ms CPU per create")
        lines.append(f"  {'total':<26} {total / wall:5.2f} cores")
        for name in PROFILED:
            samples, packages, functions = summarise((out_dir / f"{name}.txt").read_text())
            lines.append("")
            lines.append(f"{name}: {samples} samples; innermost frame by package (self time):")
            lines += [f"  {share * 100:5.1f} %  {package}" for package, share in packages[:14]]
            lines.append(f"{name}: our functions by inclusive time:")
            lines += [f"  {share * 100:5.1f} %  {function}" for function, share in functions[:22]]
    text = "\n".join(lines)
    (out_dir / "summary.txt").write_text(text + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_devstack.bench.profile",
                                     description="Profile create-lead through the gateway (py-spy) and "
                                                 "measure the CPU each part of the platform uses.")
    parser.add_argument("--seconds", type=positive(float, "--seconds"), default=20.0,
                        help="profiled load (default 20)")
    add_load_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (.run/bench/profile)")
    args = parser.parse_args(argv)
    plan = BenchPlan(concurrency=args.concurrency, web_concurrency=args.web_concurrency, web_threads=args.web_threads)
    try:
        text = run_profile(plan, args.out or default_output_dir() / "profile", args.seconds)
    except (DevstackError, LoadError) as exc:
        print(f"[bench] profile failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
