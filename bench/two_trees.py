"""omgate from two source trees, in interleaved rounds of the same load: what a change does
to a whole server's CPU a message, in situ (issue 23).

Two runs of `make bench` on this shared host differ by more than most single changes do
(docs/PERFORMANCE.md). This starts both servers at once, with `bench/run.py`'s
configuration, pinning and load generator, and loads them in turn, ABBA, round after
round; it prints each round's CPU a message (all the server's threads) and its event loop
thread's user time, then the medians and B / A:

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/two_trees.py /tmp/before . --rounds 8

A tree is a checkout of this repository; both run on this one's virtual environment.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path

from run import PAYLOAD_1, batch_message, bench_folder, load, omgate

CLOCK_TICKS = 100  # of /proc/PID/stat's times a second (USER_HZ)


def _event_loop_user_seconds(pid: int) -> float:
    """The user CPU of the process's main thread (its thread id is the process id)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[11]) / CLOCK_TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="tree A")
    parser.add_argument("after", type=Path, help="tree B")
    parser.add_argument("--mode", choices=("keep-alive", "new-connection"),
                        default="keep-alive")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=8, choices=range(1, 11),
                        metavar="1..10")
    parser.add_argument("--notifications", type=int, choices=(1, 100), default=1,
                        help="per message: row (a)'s message, or row (b)'s")
    args = parser.parse_args()
    concurrency = 16 if args.mode == "new-connection" else 32
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    event_loop: dict[str, list[float]] = {"A": [], "B": []}
    with bench_folder() as folder, contextlib.ExitStack() as stack:
        payload = PAYLOAD_1 if args.notifications == 1 else batch_message(folder)
        servers = {}
        for name, tree in (("A", args.before), ("B", args.after)):
            servers[name] = stack.enter_context(
                omgate(folder, f"sqlite:///{folder}/inbox-{name}.db", tree=tree.resolve()))
        for number in range(args.rounds):
            for name in "AB" if number % 2 == 0 else "BA":
                server = servers[name]
                before = _event_loop_user_seconds(server.process.pid)
                result = load(folder, server, args.mode, concurrency, args.seconds, payload,
                              unique=True, run_id=f"{name.lower()}{number}")
                used = _event_loop_user_seconds(server.process.pid) - before
                cpu[name].append(result["cpu_per_1000"])
                event_loop[name].append(used / max(result["acks"], 1) * 1e6)
                print(f"{name} round {number + 1}: {result['rate']:,.1f} a second, "
                      f"{result['cpu_per_1000']:.3f} ms of CPU a message, event loop "
                      f"{event_loop[name][-1]:.0f} µs", flush=True)
    for name in "AB":
        print(f"{name}: median {statistics.median(cpu[name]):.3f} ms a message, event loop "
              f"{statistics.median(event_loop[name]):.0f} µs")
    print(f"B / A: {statistics.median(cpu['B']) / statistics.median(cpu['A']):.3f}")


if __name__ == "__main__":
    main()
