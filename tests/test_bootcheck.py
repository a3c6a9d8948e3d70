"""Boot verification: each address bound to vfio-pci at boot is on vfio-pci after the boot, or the
finding says which driver won and why (a stale initramfs, a built-in driver, a softdep naming
another module, vfio-pci not loaded, an address gone), with the fix for this host.

The boot files are written by the product's own persist operation on the kernel double; the
boot is what udev's coldplug then does with the rule (driver_override = vfio-pci on each
bound address), with the native driver already bound when the race was lost.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from passthrough.diagnose.bootcheck import BOOT_BINDING_LOST, check_boot_bindings
from passthrough.diagnose.run import diagnose
from passthrough.hosttrees.realworld import asokolsky_fuji, schplorg_t480
from passthrough.hosttrees.spec import HostSpec
from passthrough.kerneldouble import KernelDouble
from passthrough.ops import SUCCEEDED, apply_persist_binding, bind_vfio, restore_driver
from passthrough.ops.persist import MODPROBE_FILE, render_rules
from tests.kernelhosts import GTX1080TI, GTX1080TI_AUDIO, x570
from tests.test_ops_persist import PROXMOX_VFIO_CONF, debian_files
from tests.web_support import snapshot_host

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
DEVICES = "sys/bus/pci/devices"
RELEASE = "6.8.12-4-pve"  # HostSpec's default kernel release
PROXMOX_OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def persisted(make_tree, spec: HostSpec, address: str = GPU, **natives: str | None) -> KernelDouble:
    kernel = KernelDouble(make_tree(spec))
    result = apply_persist_binding(kernel, [address], native_drivers=natives or None, confirm=None)
    assert result.outcome == SUCCEEDED, result.error
    return kernel


def boot(kernel: KernelDouble, *addresses: str) -> None:
    """udev's coldplug at boot: the rule sets driver_override on each address; a native driver
    that bound earlier keeps the function (the override decides only the next probe)."""
    for address in addresses:
        kernel.write(f"{DEVICES}/{address}/driver_override", "vfio-pci")


def image(kernel: KernelDouble, name: str, *, seconds_after_binding: int) -> Path:
    """An initramfs image built ``seconds_after_binding`` after the binding's files (negative: before)."""
    path = Path(kernel.path(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x07\x07\x01")
    written = os.stat(kernel.path(MODPROBE_FILE)).st_mtime
    os.utime(path, (written + seconds_after_binding, written + seconds_after_binding))
    return path


def lost(kernel: KernelDouble) -> dict[str, dict]:
    return {finding.device: finding.to_json() for finding in check_boot_bindings(kernel)}


def test_a_binding_that_took_gives_no_finding(make_tree):
    kernel = persisted(make_tree, x570(files=debian_files()))
    boot(kernel, GPU, AUDIO)
    assert lost(kernel).keys() == {GPU, AUDIO}  # nouveau and snd_hda_intel kept them

    assert bind_vfio(kernel, GPU).outcome == SUCCEEDED

    assert lost(kernel) == {}


def test_a_binding_written_in_this_boot_or_given_back_since_is_not_a_lost_one(make_tree):
    kernel = persisted(make_tree, x570(files=debian_files()))
    assert lost(kernel) == {}  # written after this boot: it takes effect at the next one

    boot(kernel, GPU, AUDIO)
    assert bind_vfio(kernel, GPU).outcome == SUCCEEDED
    assert restore_driver(kernel, GPU).outcome == SUCCEEDED  # the give-back clears the override too

    assert kernel.link_name(f"{DEVICES}/{GPU}/driver") == "nouveau"
    assert lost(kernel) == {}


def test_an_initramfs_older_than_the_binding_is_named_with_this_hosts_rebuild(make_tree):
    kernel = persisted(make_tree, x570(files=debian_files()))
    stale = image(kernel, f"boot/initrd.img-{RELEASE}", seconds_after_binding=-3600)
    boot(kernel, GPU, AUDIO)

    finding = lost(kernel)[GPU]

    assert finding["id"] == BOOT_BINDING_LOST and finding["severity"] == "error"
    assert finding["summary"] == (
        f"{GPU} is bound to vfio-pci at boot, but nouveau took it first in this boot: "
        "the initramfs was not rebuilt since the binding was written."
    )
    assert finding["fix"] == "Rebuild the initramfs: `update-initramfs -u -k all`, then reboot."
    assert f"/boot/initrd.img-{RELEASE}: modified " in "\n".join(finding["evidence"])
    assert f"/{DEVICES}/{GPU}/driver -> nouveau" in finding["evidence"]
    assert f"/{DEVICES}/{GPU}/driver_override: vfio-pci" in finding["evidence"]
    assert finding["occurrences"] == len(finding["evidence"])

    os.utime(stale, None)  # rebuilt now: the image is newer than the files, and the softdep names nouveau
    finding = lost(kernel)[GPU]
    assert "initramfs" not in finding["summary"]
    assert finding["summary"].endswith("something loaded it before vfio-pci.")
    assert f"/{MODPROBE_FILE}: softdep nouveau pre: vfio-pci" in finding["evidence"]


def test_a_built_in_driver_cannot_lose_to_a_file_and_the_fix_says_what_can(make_tree):
    builtin = "kernel/drivers/gpu/drm/nouveau/nouveau.ko\nkernel/drivers/pci/pcie/portdrv.ko\n"
    kernel = persisted(make_tree, x570(files=debian_files(**{f"lib/modules/{RELEASE}/modules.builtin": builtin})))
    image(kernel, f"boot/initrd.img-{RELEASE}", seconds_after_binding=-60)  # stale too, but beside the point
    boot(kernel, GPU)

    finding = lost(kernel)[GPU]

    assert finding["summary"].endswith("took it first in this boot: nouveau is built into the kernel.")
    assert "initramfs" not in finding["summary"]
    assert f"/lib/modules/{RELEASE}/modules.builtin: kernel/drivers/gpu/drm/nouveau/nouveau.ko" in finding["evidence"]
    assert "vfio-pci is a module here" in finding["fix"] and "vfio-pci.ids" not in finding["fix"]

    with open(kernel.path(f"lib/modules/{RELEASE}/modules.builtin"), "a") as handle:
        handle.write("kernel/drivers/vfio/pci/vfio-pci.ko\n")
    assert "vfio-pci.ids=10de:1b06" in lost(kernel)[GPU]["fix"]


def test_a_softdep_written_for_the_driver_it_had_then_does_not_hold_the_driver_it_has_now(make_tree):
    # nouveau drove the card when it was bound at boot; the proprietary driver was installed since.
    spec = x570(files=debian_files())
    spec.functions = [replace(f, driver="nvidia") if f.address == GPU else f for f in spec.functions]
    kernel = persisted(make_tree, spec, **{GPU: "nouveau"})
    boot(kernel, GPU)

    finding = lost(kernel)[GPU]

    assert finding["summary"] == (
        f"{GPU} is bound to vfio-pci at boot, but nvidia took it first in this boot: the softdep names another "
        "module (`softdep nouveau pre: vfio-pci`, `softdep snd_hda_intel pre: vfio-pci`), not nvidia."
    )
    assert "It was written when nouveau drove" in finding["cause"]
    assert f"`manage.py device persist {GPU} --native-driver {GPU}=nvidia`" in finding["fix"]
    assert "`update-initramfs -u -k all`" in finding["fix"]


def test_with_vfio_pci_not_loaded_the_function_has_no_driver_and_a_second_install_line_is_named(make_tree):
    spec = x570(files=debian_files(**{"etc/modprobe.d/gpu.conf": "install vfio-pci /bin/true\n"}))
    spec.functions = [replace(f, driver=None) if f.address == GPU else f for f in spec.functions]  # blacklisted
    kernel = persisted(make_tree, spec, **{GPU: "nouveau"})
    boot(kernel, GPU)
    assert not kernel.is_dir("sys/bus/pci/drivers/vfio-pci")

    finding = lost(kernel)[GPU]

    assert finding["summary"] == (
        f"{GPU} is bound to vfio-pci at boot, but no driver has it in this boot: vfio-pci is not loaded."
    )
    assert "/etc/modprobe.d/gpu.conf: install vfio-pci /bin/true" in finding["evidence"]
    assert "modprobe runs only one" in finding["cause"]
    assert "/etc/initramfs-tools/modules" in finding["fix"]


def test_an_address_bound_at_boot_that_this_boot_does_not_have_is_a_warning(make_tree):
    moved = "0000:0d:00.0"  # where the card was before a second card moved the bus numbers
    rules = render_rules({moved: "nouveau"}) or ""
    kernel = KernelDouble(make_tree(x570(files={"etc/udev/rules.d/90-passthrough-wizard-vfio.rules": rules})))

    [finding] = check_boot_bindings(kernel)

    assert (finding.id, finding.severity, finding.device) == (BOOT_BINDING_LOST, "warning", moved)
    assert "no PCI function at that address" in finding.summary
    assert f"`manage.py device unpersist {moved}`" in finding.fix
    assert "driven by nouveau" in finding.cause


# Real machines of the shared catalogue ---------------------------------------------------
def test_on_asokolsky_fuji_igb_wins_over_a_stale_initramfs_beside_the_owners_own_softdep(make_tree):
    """Proxmox VE 6.5.11-8-pve on a Fujitsu C236 server: the owner's vfio.conf has `softdep igb pre:
    vfio-pci`; the I210 at 04:00.0 is bound at boot by address, and this boot igb has it."""
    spec = asokolsky_fuji()
    i210 = "0000:04:00.0"
    spec.functions = [replace(f, driver="igb") if f.address == i210 else f for f in spec.functions]
    spec.files = {
        "etc/os-release": PROXMOX_OS_RELEASE,
        "usr/sbin/update-initramfs": "",
        "etc/initramfs-tools/modules": "",
        "etc/modprobe.d/vfio.conf": PROXMOX_VFIO_CONF,
    }
    kernel = persisted(make_tree, spec, i210)
    image(kernel, "boot/initrd.img-6.5.11-8-pve", seconds_after_binding=-86400)
    boot(kernel, i210)

    [finding] = check_boot_bindings(kernel)

    assert finding.device == i210
    assert finding.summary.endswith(
        "igb took it first in this boot: the initramfs was not rebuilt since the binding was written."
    )
    assert "/boot/initrd.img-6.5.11-8-pve" in finding.sources
    assert finding.fix == "Rebuild the initramfs: `update-initramfs -u -k all`, then reboot."


def test_on_schplorg_t480_a_fedora_dracut_image_is_compared_and_dracut_rebuilds_it(make_tree):
    """Fedora 28 (4.18.17-200.fc28) with the owner's dracut and modprobe files: the eGPU's GTX 1060 is
    bound at boot by address and nouveau won from an initramfs built before that."""
    spec = schplorg_t480()
    gtx = "0000:09:00.0"
    spec.functions = [replace(f, driver="nouveau") if f.address == gtx else f for f in spec.functions]
    kernel = persisted(make_tree, spec, gtx)
    image(kernel, f"boot/initramfs-{spec.osrelease}.img", seconds_after_binding=-600)
    boot(kernel, gtx)

    finding = lost(kernel)[gtx]

    assert spec.osrelease == "4.18.17-200.fc28.x86_64"
    assert finding["summary"].endswith("the initramfs was not rebuilt since the binding was written.")
    assert finding["fix"] == "Rebuild the initramfs: `dracut -f --regenerate-all`, then reboot."


# Where it shows: manage.py diagnose, the snapshot, the overview --------------------------
def test_diagnose_reports_it_with_the_log_findings_and_exits_1(make_tree):
    kernel = persisted(make_tree, x570(files=debian_files(), dmesg="[    0.000000] Linux version 6.8.12-4-pve\n"))
    boot(kernel, GPU)
    assert [finding.id for finding in diagnose(kernel).findings] == [BOOT_BINDING_LOST]

    out = StringIO()
    with pytest.raises(CommandError) as exit_:
        call_command("diagnose", "--root", kernel.root, "--format", "json", stdout=out)
    assert exit_.value.returncode == 1
    [finding] = json.loads(out.getvalue())["findings"]
    assert finding["device"] == GPU and finding["id"] == BOOT_BINDING_LOST


@pytest.mark.django_db
def test_the_overview_says_which_address_lost_and_why_and_links_the_diagnose_page(
    tmp_path: Path, viewer_client: Client
) -> None:
    spec = x570(files=debian_files(), dmesg="[    0.000000] Linux version 6.8.12-4-pve\n")
    root = tmp_path / "x570"
    from passthrough.hosttrees.tree import write_tree

    write_tree(spec, root)
    kernel = KernelDouble(root)
    assert apply_persist_binding(kernel, [GPU], native_drivers=None, confirm=None).outcome == SUCCEEDED
    image(kernel, f"boot/initrd.img-{RELEASE}", seconds_after_binding=-3600)
    boot(kernel, GPU, AUDIO)
    from passthrough.host import HostTree
    from webui.hosts.models import Host, Snapshot
    from webui.hosts.snapshots import take_snapshot

    host, _ = Host.objects.get_or_create(name="x570", defaults={"root": str(root)})
    take_snapshot(host, HostTree(str(root)), Snapshot.Source.STARTUP)

    response = viewer_client.get(reverse("host_home", kwargs={"host": "x570"}))

    assert response.status_code == 200, "no device is on vfio-pci, yet a lost binding keeps the overview"
    html = response.content.decode()
    assert "Bound at boot, not on vfio-pci" in html
    assert f"<code>{GPU}</code>" in html and "the initramfs was not rebuilt since the binding was written" in html
    assert f'href="{reverse("diagnose", kwargs={"host": "x570"})}#finding-1"' in html
    assert f'href="{reverse("diagnose", kwargs={"host": "x570"})}#finding-2"' in html
    device = viewer_client.get(reverse("device", kwargs={"host": "x570", "address": GPU})).content.decode()
    assert "<strong>Diagnosis:</strong> " + f"{GPU} is bound to vfio-pci at boot, but nouveau took it first" in device


@pytest.mark.django_db
def test_an_overview_without_lost_bindings_says_nothing_about_them(tmp_path: Path, viewer_client: Client) -> None:
    snapshot_host("plain", x570(), tmp_path / "plain")
    response = viewer_client.get(reverse("host_home", kwargs={"host": "plain"}) + "?dashboard=1")
    assert response.status_code == 200
    assert "Bound at boot, not on vfio-pci" not in response.content.decode()
