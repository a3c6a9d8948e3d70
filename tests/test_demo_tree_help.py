"""`manage.py demo_tree --help` lists every machine of the catalogue, as the README says."""

import re
import subprocess
import sys
from pathlib import Path

from passthrough.hosttrees import realworld

REPO = Path(__file__).resolve().parent.parent


def test_demo_tree_help_lists_every_machine_with_a_line_about_it():
    result = subprocess.run(
        [sys.executable, "manage.py", "demo_tree", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    listing = result.stdout.split("machines (published hardware, from passthrough/hosttrees/realworld.py):\n", 1)[1]
    described: dict[str, str] = {}
    for line in listing.splitlines():
        if re.match(r"  \S", line):  # a machine's line; a description's next lines are indented further
            name, words = line.split(None, 1)
            described[name] = words
        elif line.strip():
            described[name] += " " + line.strip()
    assert sorted(described) == sorted(realworld.MACHINES)
    assert all(len(words) > 20 for words in described.values())
    assert described["asokolsky-duo"].endswith("(the default)")
