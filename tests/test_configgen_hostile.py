"""Names read from a host tree cannot add a line or a command to any target's output.

A crafted capture can hold anything in its pci.ids names, its driver links and its own
path. Whatever they hold, every target comes out line for line as it does for a host with
plain names: the same number of lines, every line that is not a comment identical, no
control character anywhere, and each file still parses the way its hypervisor reads it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from passthrough.configgen import GeneratedConfig, VmSpec, build_spec, generate
from passthrough.configgen.qemu import arguments
from passthrough.hosttrees.tree import write_tree
from passthrough.pci import pciids
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import desktop, hostdevs, virt_xml_validate
from tests.qemu_argv_support import run_qemu_script, script_argv

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("qemu", "libvirt", "proxmox", "vmware", "hyperv")
HOSTILE = ["\n", "\r", "\x00", "\x1b[31m", "\u2028", "$(reboot)", "`id`", "'\"", "-->", "<hostdev>", "; rm -rf /"]
# All of them at once, with NEL, a byte that is not UTF-8 (as os.readlink returns it) and a bidi override.
EVERYTHING = "".join(HOSTILE) + "\x85\udcff\u202e"
PICKS = ["01:00.0", "03:00.0"]  # a GPU with its HDMI audio, a NIC
OPTIONS: dict[str, Any] = {"name": "win10", "hide_kvm": True, "hv_vendor_id": "1234567890ab", "hugepages": True}
DRIVEN = ("0000:01:00.0", "0000:01:00.1", "0000:03:00.0")  # the functions whose driver link is rewritten

# Nothing but the line feeds that end lines: C0, DEL, C1 (NEL), U+2028/2029, lone surrogates.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
PROXMOX_LINE = re.compile(r"^(?:[a-z0-9]+: .*|#.*)$")
VMX_LINE = re.compile(r'^(?:[A-Za-z0-9.:]+ = "[^"]*"|#.*|)$')
# Not in a file name: '/', NUL, and surrogates other than the ones surrogateescape makes of bytes.
UNWRITABLE = re.compile(r"[/\x00\ud800-\udc7f\udd00-\udfff]")


class Names:
    """pci.ids as a crafted capture could have it: every name holds ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def vendor(self, vendor: str | None) -> str | None:
        return f"Vendor {self.text} {vendor}" if vendor else None

    def device(self, vendor: str | None, device: str | None) -> str | None:
        return f"Device {self.text} {device}" if vendor and device else None

    def subsystem(self, *ids: str | None) -> str | None:
        return f"Board {self.text}" if all(ids) else None

    def class_name(self, class_code: str | None) -> str | None:
        return f"Class {self.text}" if class_code else None


def scan_with_names(root: Path, text: str) -> Inventory:
    with mock.patch.object(pciids, "load", return_value=Names(text)):
        return scan(root)


def as_link_name(text: str) -> str:
    """``text`` as a file name can hold it: no '/' or NUL, at most 200 bytes, never '.' or '..'."""
    kept = UNWRITABLE.sub("", text)
    name = kept.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "surrogateescape")
    return name if name not in ("", ".", "..") else f"driver{name}"


def set_drivers(root: Path, name: str) -> None:
    for address in DRIVEN:
        link = root / "sys/bus/pci/devices" / address / "driver"
        os.remove(link)
        os.symlink("../../../../bus/pci/drivers/" + name, link)


class Host:
    """A host tree and what every target makes of it (a plain class: hypothesis prints its arguments)."""

    def __init__(self, root: Path, configs: dict[str, GeneratedConfig], spec: VmSpec) -> None:
        self.root, self.configs, self.spec = root, configs, spec

    def __repr__(self) -> str:
        return f"Host({str(self.root)!r})"


def generate_all(root: Path, text: str) -> Host:
    inventory = scan_with_names(root, text)
    spec = build_spec(inventory, PICKS, tree=root, **OPTIONS)
    return Host(root, {target: generate(inventory, spec, target) for target in TARGETS}, spec)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Host:
    root = Path(
        write_tree(
            desktop(gpu_driver="nvidia", audio_driver="snd_hda_intel"), tmp_path_factory.mktemp("plain") / "host"
        )
    )
    return generate_all(root, "plain")


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> Path:
    """A host tree whose own path holds a newline, a command and an escape sequence."""
    parent = tmp_path_factory.mktemp("hostile") / "captures\n$(reboot) -->\x1b[31m"
    return Path(write_tree(desktop(gpu_driver="nvidia", audio_driver="snd_hda_intel"), parent / "host"))


def is_comment(target: str, index: int, lines: list[str]) -> bool:
    if target == "libvirt":
        return index <= lines.index("-->")
    return lines[index].startswith("#")


def assert_shaped_like(target: str, hostile: str, plain: str) -> None:
    """Line for line as with plain names, nothing unprintable, and the file still reads as its format."""
    assert CONTROL.search(hostile) is None, repr(CONTROL.search(hostile))
    hostile.encode("utf-8")  # a lone surrogate could not be written out
    lines, plain_lines = hostile.split("\n"), plain.split("\n")
    assert hostile.splitlines() == lines[:-1]  # no other line break (U+2028, NEL, VT) anywhere
    assert len(lines) == len(plain_lines)
    for index, (line, plain_line) in enumerate(zip(lines, plain_lines, strict=True)):
        assert is_comment(target, index, lines) == is_comment(target, index, plain_lines), (index, line)
        if not is_comment(target, index, plain_lines):
            assert line == plain_line, (index, line)
    if target == "libvirt":
        end = lines.index("-->")
        assert lines[0] == "<!--" and all("--" not in line for line in lines[1:end])
        assert hostdevs(hostile) == hostdevs(plain)
        ET.fromstring(hostile)
    elif target == "proxmox":
        assert all(PROXMOX_LINE.match(line) for line in lines[:-1]), lines
    elif target == "vmware":
        assert all(VMX_LINE.match(line) for line in lines[:-1]), lines


def with_hostile_examples(test: Callable[..., None]) -> Callable[..., None]:
    for text in [*HOSTILE, EVERYTHING]:
        test = example(text=text)(test)
    return test


@settings(max_examples=60, deadline=None)
@with_hostile_examples
@given(text=st.text(st.characters(exclude_categories=()), max_size=40))
def test_any_name_or_driver_leaves_every_target_line_for_line_as_with_plain_names(plain, hostile_root, text):
    set_drivers(hostile_root, as_link_name(text))
    hostile = generate_all(hostile_root, text)
    for target in TARGETS:
        assert_shaped_like(target, hostile.configs[target].text, plain.configs[target].text)
    lines, _ = arguments(hostile.spec)
    tokens = [token for line in lines for token in line]
    assert script_argv(hostile.configs["qemu"].text) == ["qemu-system-x86_64", *tokens, "$@"]


@contextmanager
def hostile_host(hostile_root: Path, text: str) -> Iterator[Host]:
    set_drivers(hostile_root, as_link_name(text))
    yield generate_all(hostile_root, text)


@pytest.mark.parametrize("text", [*HOSTILE, EVERYTHING], ids=repr)
def test_the_qemu_script_still_hands_qemu_exactly_its_arguments(hostile_root, tmp_path, text):
    with hostile_host(hostile_root, text) as host:
        run = run_qemu_script(host.configs["qemu"].text, tmp_path, "-snapshot")
        lines, _ = arguments(host.spec)
        assert run.argv == [token for line in lines for token in line] + ["-snapshot"]
        assert run.copied == ["/usr/share/OVMF/OVMF_VARS_4M.fd", "/var/lib/passthrough-wizard/win10_VARS.fd"]


@pytest.mark.parametrize("text", [EVERYTHING, "-->\n<hostdev>", "\x00\x1b"], ids=repr)
def test_the_libvirt_domain_still_validates(hostile_root, tmp_path, text):
    with hostile_host(hostile_root, text) as host:
        path = tmp_path / "vm.xml"
        path.write_text(host.configs["libvirt"].text)
        result = virt_xml_validate(path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_comments_show_what_the_host_holds_as_escapes(hostile_root):
    with hostile_host(hostile_root, EVERYTHING) as host:
        qemu = host.configs["qemu"].text
        assert (
            "#   0000:01:00.0 Device \\n\\r\\x00\\x1b[31m\\u2028$(reboot)`id`'\"--><hostdev>; rm -rf /\\x85\\udcff\\u202e 1b06"
            in qemu
        )
        assert "It is on \\n\\r\\x1b[31m\\u2028$(reboot)`id`'\"--><hostdev>; rm -rf \\x85\\udcff\\u202e now." in qemu
        assert "captures\\n$(reboot) -->\\x1b[31m/host" in qemu
        assert "- ->" in host.configs["libvirt"].text


# --------------------------------------------------------------------------------------
# The same through `manage.py vmconfig`, with the names in a pci.ids file of the capture's own.
def vmconfig(root: Path, ids: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "manage.py", "vmconfig", "--root", str(root), "--device", "01:00.0", *args],
        cwd=REPO,
        env={**os.environ, "PASSTHROUGH_PCI_IDS": str(ids)},
        capture_output=True,
        check=False,
    )


def pci_ids(path: Path, text: str) -> Path:
    """A pci.ids with the desktop's ids, every name holding ``text`` (pci.ids has no newline in a name)."""
    path.write_text(
        f"10de  NVIDIA {text} Corporation\n\t1b06  GP102 {text} [GeForce]\n\t10ef  GP102 {text} Audio\n"
        f"8086  Intel {text} Corporation\n\t1539  I211 {text} Gigabit\n"
        f"C 03  Display {text} controller\n\t00  VGA {text} controller\n",
        encoding="utf-8",
        errors="surrogateescape",
    )
    return path


@pytest.mark.parametrize("target", TARGETS)
def test_vmconfig_prints_the_same_lines_for_a_hostile_capture(hostile_root, plain, tmp_path, target):
    set_drivers(hostile_root, as_link_name(EVERYTHING))
    text = EVERYTHING.replace("\n", "")
    hostile = vmconfig(hostile_root, pci_ids(tmp_path / "hostile.ids", text), "--target", target)
    calm = vmconfig(plain.root, pci_ids(tmp_path / "plain.ids", "plain"), "--target", target)
    assert hostile.returncode == calm.returncode == 0, hostile.stderr.decode(errors="replace")
    assert_shaped_like(target, hostile.stdout.decode("utf-8"), calm.stdout.decode("utf-8"))
    # The notes on stderr name the same functions and carry no escape sequence to the terminal.
    notes = hostile.stderr.decode("utf-8")
    assert notes.count("\n") == calm.stderr.decode("utf-8").count("\n")
    assert CONTROL.search(notes.replace("\n", "")) is None


@pytest.mark.parametrize("rom", ["/roms/gpu\n.rom", "/roms/\x1b[31m.rom", "/roms/a\u2028b.rom"])
def test_vmconfig_refuses_a_rom_path_with_a_control_character_in_one_line(plain, tmp_path, rom):
    result = vmconfig(plain.root, pci_ids(tmp_path / "plain.ids", "plain"), "--target", "qemu", "--rom-file", rom)
    assert result.returncode == 2 and result.stdout == b""
    stderr = result.stderr.decode("utf-8")
    assert stderr.count("\n") == 1 and "ROM file" in stderr
    assert CONTROL.search(stderr.rstrip("\n")) is None
