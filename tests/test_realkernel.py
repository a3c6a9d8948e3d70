"""Every release on real kernels: guest-side tests run in QEMU guests, each reported here as a test.

One guest boots per scenario (tests/realkernel/scenarios.py), the first time one of its
tests runs; it runs that scenario's module of tests/realkernel_guest/ with this
checkout's code and reports per test (one JSON line per test, through the shared work folder). A test
here passes, fails (with the guest's own failure text) or skips as its guest-side twin
did. ``scripts/test -m realkernel`` runs only these.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.realkernel.guest import GuestRun, KernelUnavailable, boot, unavailable_reason
from tests.realkernel.scenarios import SCENARIOS, Scenario

REASON = unavailable_reason()
pytestmark = [pytest.mark.realkernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@dataclass
class Outcome:
    outcome: str  # passed, failed, skipped, hung
    text: str = ""
    seconds: float = 0.0


@dataclass
class ScenarioRun:
    run: GuestRun | None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    problem: str | None = None


def guest_script(scenario: Scenario, prepared: dict[str, str] | None = None) -> str:
    # faulthandler_timeout: a test stuck for 2 minutes prints every thread's stack to output.log.
    extra = os.environ.get("PASSTHROUGH_GUEST_PYTEST_ARGS", "")
    exports = "".join(f" {name}={shlex.quote(value)}" for name, value in (prepared or {}).items())
    return (
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
        f"PYTHONDONTWRITEBYTECODE=1 PASSTHROUGH_GUEST=1 PASSTHROUGH_WATCH_UDEV=false{exports}\n"
        'GUEST_RESULTS="$(dirname "$0")/results.jsonl"; export GUEST_RESULTS\n'
        # No udev in the guest: load each device's driver by its modalias, as udev's coldplug does.
        'for alias in /sys/bus/pci/devices/*/modalias; do modprobe -q "$(cat "$alias")" 2>/dev/null; done\n'
        'echo "guest: pytest starts at $(cut -d" " -f1 /proc/uptime) s of uptime"\n'
        ".venv/bin/python -m pytest -p no:cacheprovider -p no:hypothesispytest -o addopts='' -o faulthandler_timeout=120 -rA "
        f"--durations=5 {extra} {' '.join(str(path) for path in scenario.paths)}\n"
        'status=$?; echo "guest: pytest ends at $(cut -d" " -f1 /proc/uptime) s of uptime"; exit $status\n'
    )


def parse_results(text: str) -> dict[str, Outcome]:
    """The guest's results.jsonl: a test that started and never finished is reported as hung."""
    outcomes: dict[str, Outcome] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a guest killed mid-write
        name, event = entry["test"], entry["event"]
        if event == "started":
            outcomes[name] = Outcome("hung", "started and never finished: the guest was killed at its timeout")
        elif event == "failed" or outcomes.get(name, Outcome("")).outcome != "failed":
            # A failed teardown after a passed call still fails the test.
            outcomes[name] = Outcome(event, entry.get("text", ""), entry.get("seconds", 0.0))
    return outcomes


def run_scenario(scenario: Scenario) -> ScenarioRun:
    try:
        prepared = scenario.prepare() if scenario.prepare is not None else None
        run = boot(scenario.machine, guest_script(scenario, prepared), timeout=scenario.timeout)
    except KernelUnavailable as error:
        return ScenarioRun(None, problem=f"no kernel to boot: {error}")
    except (RuntimeError, OSError) as error:  # what the host prepares for the guest (the nested VM's state)
        return ScenarioRun(None, problem=f"preparing the guest failed: {error}")
    results = run.work / "results.jsonl"
    if results.exists():
        result = ScenarioRun(run, parse_results(results.read_text()))
    else:
        result = ScenarioRun(run, problem=f"the guest wrote no results.\n{run.describe()}")
    _keep_logs(scenario, run)
    return result


# The guests of every selected scenario start together, GUESTS_AT_ONCE at a time (one per
# core by default: a guest spends most of its time in one busy vCPU), so the scenarios
# take about the time of the longest rather than the sum.
GUESTS_AT_ONCE = max(1, int(os.environ.get("PASSTHROUGH_GUESTS_AT_ONCE", os.cpu_count() or 1)))
_pool: ThreadPoolExecutor | None = None
_runs: dict[str, Future[ScenarioRun]] = {}


def start_scenarios(items: list[pytest.Item]) -> None:
    """Boot the guests of every scenario the session selected, longest first."""
    global _pool
    wanted: list[Scenario] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        scenario = callspec.params.get("scenario") if callspec else None
        if isinstance(scenario, Scenario) and scenario not in wanted:
            wanted.append(scenario)
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=GUESTS_AT_ONCE, thread_name_prefix="guest")
    for scenario in sorted(wanted, key=lambda s: -s.seconds):
        if scenario.name not in _runs:
            _runs[scenario.name] = _pool.submit(run_scenario, scenario)


def _keep_logs(scenario: Scenario, run: GuestRun) -> None:
    """Copy the guest's logs to test-artifacts/realkernel/<scenario>/ and drop the work folder."""
    from tests.realkernel.kernel import REPO

    keep = REPO / "test-artifacts" / "realkernel" / scenario.name
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for name in ("output.log", "console.log", "dmesg.log", "results.jsonl", "qemu.log"):
        if (run.work / name).exists():
            shutil.copy(run.work / name, keep / name)
    (keep / "seconds").write_text(f"{run.seconds:.1f}\n")
    shutil.rmtree(run.work, ignore_errors=True)


def check(scenario: Scenario, name: str, items: list[pytest.Item]) -> None:
    start_scenarios(items)
    result = _runs[scenario.name].result()
    if result.problem is not None:
        pytest.fail(f"scenario {scenario.name}: {result.problem}", pytrace=False)
    outcome = result.outcomes.get(name)
    if outcome is None:
        assert result.run is not None
        pytest.fail(f"{name} did not run in the {scenario.name} guest.\n{result.run.describe()}", pytrace=False)
    if outcome.outcome == "skipped":
        pytest.skip(f"skipped in the guest: {outcome.text}")
    if outcome.outcome == "hung":
        assert result.run is not None
        pytest.fail(f"{name} hung in the {scenario.name} guest.\n{result.run.describe()}", pytrace=False)
    if outcome.outcome == "failed":
        pytest.fail(f"failed in the {scenario.name} guest:\n{outcome.text}", pytrace=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest_test" in metafunc.fixturenames:
        cases = [(scenario, name) for scenario in SCENARIOS.values() for name in scenario.test_names()]
        metafunc.parametrize(
            ("scenario", "guest_test"), cases, ids=[f"{scenario.name}-{name}" for scenario, name in cases]
        )


def test_in_guest(scenario: Scenario, guest_test: str, request: pytest.FixtureRequest) -> None:
    check(scenario, guest_test, request.session.items)
