"""Every release on real kernels: guest-side tests run in QEMU guests, each reported here as a test.

One guest boots per scenario (tests/realkernel/scenarios.py), the first time one of its
tests runs; it runs that scenario's module of tests/realkernel_guest/ with this
checkout's code and reports per test (JUnit XML through the shared work folder). A test
here passes, fails (with the guest's own failure text) or skips as its guest-side twin
did. ``scripts/test -m realkernel`` runs only these.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from tests.realkernel.guest import GuestRun, KernelUnavailable, boot, unavailable_reason
from tests.realkernel.scenarios import SCENARIOS, Scenario

REASON = unavailable_reason()
pytestmark = [pytest.mark.realkernel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@dataclass
class Outcome:
    outcome: str  # passed, failed, skipped, missing
    text: str = ""
    seconds: float = 0.0


@dataclass
class ScenarioRun:
    run: GuestRun | None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    problem: str | None = None


_runs: dict[str, ScenarioRun] = {}


def guest_script(scenario: Scenario) -> str:
    return (
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "
        "PYTHONDONTWRITEBYTECODE=1 PASSTHROUGH_GUEST=1 PASSTHROUGH_WATCH_UDEV=false\n"
        # No udev in the guest: load each device's driver by its modalias, as udev's coldplug does.
        'for alias in /sys/bus/pci/devices/*/modalias; do modprobe -q "$(cat "$alias")" 2>/dev/null; done\n'
        f".venv/bin/python -m pytest -p no:cacheprovider -o addopts='' -rA "
        f'--junitxml="$GUEST_JUNIT" --durations=5 {" ".join(str(path) for path in scenario.paths)}\n'
    )


def parse_junit(text: str) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for case in ET.fromstring(text).iter("testcase"):
        name = case.get("name", "")
        seconds = float(case.get("time") or 0)
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            outcomes[name] = Outcome("failed", f"{failure.get('message', '')}\n{failure.text or ''}", seconds)
        elif skipped is not None:
            outcomes[name] = Outcome("skipped", skipped.get("message", ""), seconds)
        else:
            outcomes[name] = Outcome("passed", "", seconds)
    return outcomes


def run_scenario(scenario: Scenario) -> ScenarioRun:
    if scenario.name in _runs:
        return _runs[scenario.name]
    try:
        run = boot(
            scenario.machine,
            f'GUEST_JUNIT="$(dirname "$0")/junit.xml"; export GUEST_JUNIT\n{guest_script(scenario)}',
            timeout=scenario.timeout,
        )
    except KernelUnavailable as error:
        result = ScenarioRun(None, problem=f"no kernel to boot: {error}")
    else:
        junit = run.work / "junit.xml"
        if junit.exists():
            result = ScenarioRun(run, parse_junit(junit.read_text()))
        else:
            result = ScenarioRun(run, problem=f"the guest wrote no results.\n{run.describe()}")
        _keep_logs(scenario, run)
    _runs[scenario.name] = result
    return result


def _keep_logs(scenario: Scenario, run: GuestRun) -> None:
    """Copy the guest's logs to test-artifacts/realkernel/<scenario>/ and drop the work folder."""
    from tests.realkernel.kernel import REPO

    keep = REPO / "test-artifacts" / "realkernel" / scenario.name
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for name in ("output.log", "console.log", "dmesg.log", "junit.xml", "qemu.log"):
        if (run.work / name).exists():
            shutil.copy(run.work / name, keep / name)
    (keep / "seconds").write_text(f"{run.seconds:.1f}\n")
    shutil.rmtree(run.work, ignore_errors=True)


def check(scenario: Scenario, name: str) -> None:
    result = run_scenario(scenario)
    if result.problem is not None:
        pytest.fail(f"scenario {scenario.name}: {result.problem}", pytrace=False)
    outcome = result.outcomes.get(name)
    if outcome is None:
        assert result.run is not None
        pytest.fail(f"{name} did not run in the {scenario.name} guest.\n{result.run.describe()}", pytrace=False)
    if outcome.outcome == "skipped":
        pytest.skip(f"skipped in the guest: {outcome.text}")
    if outcome.outcome == "failed":
        pytest.fail(f"failed in the {scenario.name} guest:\n{outcome.text}", pytrace=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest_test" in metafunc.fixturenames:
        cases = [(scenario, name) for scenario in SCENARIOS.values() for name in scenario.test_names()]
        metafunc.parametrize(
            ("scenario", "guest_test"), cases, ids=[f"{scenario.name}-{name}" for scenario, name in cases]
        )


def test_in_guest(scenario: Scenario, guest_test: str) -> None:
    check(scenario, guest_test)
