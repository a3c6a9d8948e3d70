"""Benchmark: every real-kernel scenario booted as the test suite boots them, with the time each took.

The goal (issue 10): all scenarios in under 5 minutes on a two-core machine. The guests start
together, one per core at a time, longest first (tests/test_realkernel.py), so the wall time is
about the longest chain of guests on one core, not the sum. Prints, per scenario: the guest's
seconds from QEMU start to power-off, its tests passed / failed / skipped, and then the wall
time against the goal. Needs root and qemu-system-x86 (as the tests do); the first run also
downloads and unpacks the kernel package. Run it on an otherwise idle machine: the guests are
CPU-bound (TCG), so other work slows them one for one.

Usage: .venv/bin/python bench/realkernel.py [--scenario NAME ...] [--at-once N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.realkernel.guest import unavailable_reason  # noqa: E402
from tests.realkernel.scenarios import SCENARIOS  # noqa: E402
from tests.test_realkernel import GUESTS_AT_ONCE, run_scenario  # noqa: E402

GOAL_SECONDS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="only these (default: all)")
    parser.add_argument(
        "--at-once", type=int, default=GUESTS_AT_ONCE, help=f"guests at a time (default {GUESTS_AT_ONCE})"
    )
    options = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot boot guests here: {reason}", file=sys.stderr)
        return 2
    chosen = [SCENARIOS[name] for name in (options.scenario or SCENARIOS)]
    chosen.sort(key=lambda scenario: -scenario.seconds)  # as the suite orders them: longest first
    print(f"{len(chosen)} scenario(s), {options.at_once} guest(s) at a time on {os.cpu_count()} core(s)")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=options.at_once) as pool:
        runs = {scenario.name: pool.submit(run_scenario, scenario) for scenario in chosen}
        failed = False
        for name, future in runs.items():
            result = future.result()
            if result.problem is not None or result.run is None:
                print(f"  {name:<9} PROBLEM  {result.problem}")
                failed = True
                continue
            counts = {
                kind: sum(1 for o in result.outcomes.values() if o.outcome == kind)
                for kind in ("passed", "failed", "skipped", "hung")
            }
            failed = failed or bool(counts["failed"] or counts["hung"])
            print(
                f"  {name:<9} {result.run.seconds:6.1f} s   {counts['passed']} passed, {counts['failed']} failed, "
                f"{counts['skipped']} skipped, {counts['hung']} hung"
            )
    wall = time.monotonic() - started
    verdict = "within" if wall <= GOAL_SECONDS else "OVER"
    print(f"all scenarios: {wall:.1f} s wall ({verdict} the {GOAL_SECONDS:.0f} s goal)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
