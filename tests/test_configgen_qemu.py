"""The QEMU target: a runnable script, one quoted option per line."""

from __future__ import annotations

import shlex

import pytest

from passthrough.configgen import PassedDevice, VmSpec, build_spec, generate
from passthrough.configgen.qemu import arguments
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import desktop, desktop_with_quad_nic
from tests.qemu_argv_support import run_qemu_script, script_argv, vfio_devices


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop_with_quad_nic()))


def qemu(inventory: Inventory, addresses: list[str], **options) -> str:
    return generate(inventory, build_spec(inventory, addresses, **options), "qemu").text


def options_of(argv: list[str], option: str) -> list[str]:
    return [value for flag, value in zip(argv, argv[1:], strict=False) if flag == option]


def test_q35_gives_each_physical_device_its_own_pcie_root_port(inventory):
    argv = script_argv(qemu(inventory, ["01:00.0", "03:00.0"]))
    ports = [value for value in options_of(argv, "-device") if value.startswith("pcie-root-port,")]
    port_ids = [dict(part.split("=") for part in port.split(",")[1:])["id"] for port in ports]
    assert len(port_ids) == 2
    devices = vfio_devices(argv)
    assert {device.host: device.bus for device in devices} == {
        "0000:01:00.0": port_ids[0],
        "0000:01:00.1": port_ids[0],
        "0000:03:00.0": port_ids[1],
    }
    assert "-machine" in argv and options_of(argv, "-machine")[0].startswith("q35,")


def test_functions_of_one_device_share_one_guest_slot_with_their_numbers(inventory):
    devices = vfio_devices(script_argv(qemu(inventory, ["01:00.0"])))
    gpu, audio = devices
    assert gpu.guest_slot == audio.guest_slot
    assert (gpu.function, audio.function) == (0, 1)
    assert gpu.options.get("multifunction") == "on"
    assert "multifunction" not in audio.options


def test_function_numbers_are_kept_when_functions_are_skipped(inventory):
    # Ports 0 and 3 of the quad NIC: one guest slot, functions 0 and 3 as on the host.
    devices = vfio_devices(script_argv(qemu(inventory, ["04:00.3", "04:00.0"])))
    assert [(device.host, device.function) for device in devices] == [("0000:04:00.0", 0), ("0000:04:00.3", 3)]
    assert devices[0].guest_slot == devices[1].guest_slot


def test_a_lone_function_other_than_0_takes_function_0_in_the_guest(inventory):
    spec = VmSpec(devices=[PassedDevice("0000:04:00.2")])
    (device,) = vfio_devices(script_argv(generate(inventory, spec, "qemu").text))
    assert device.host == "0000:04:00.2" and device.function == 0
    assert "multifunction" not in device.options


def test_single_function_device_has_no_multifunction(inventory):
    (nic,) = vfio_devices(script_argv(qemu(inventory, ["03:00.0"])))
    assert nic.options["addr"] == "0x0" and "multifunction" not in nic.options


def test_primary_gpu_gets_x_vga_under_seabios_but_not_under_ovmf(inventory):
    seabios = script_argv(qemu(inventory, ["01:00.0"], primary_gpu=True, firmware="seabios"))
    gpu, audio = vfio_devices(seabios)
    assert gpu.options.get("x-vga") == "on" and "x-vga" not in audio.options
    assert options_of(seabios, "-vga") == ["none"]
    ovmf = generate(inventory, build_spec(inventory, ["01:00.0"], primary_gpu=True), "qemu")
    assert all("x-vga" not in device.options for device in vfio_devices(script_argv(ovmf.text)))
    assert options_of(script_argv(ovmf.text), "-vga") == ["none"]
    assert "GOP" in ovmf.notes["x-vga"]


def test_romfile_and_rombar_go_on_their_device(inventory):
    gpu, audio = vfio_devices(script_argv(qemu(inventory, ["01:00.0"], rom_file="/usr/share/vgabios/My GP102.rom")))
    assert gpu.options["romfile"] == "/usr/share/vgabios/My GP102.rom"
    assert "romfile" not in audio.options
    gpu, _ = vfio_devices(script_argv(qemu(inventory, ["01:00.0"], rombar=False)))
    assert gpu.options["rombar"] == "0"


def test_ovmf_boots_from_debian_code_and_a_per_vm_copy_of_the_vars(inventory):
    text = qemu(inventory, ["01:00.0"], name="win10")
    drives = options_of(script_argv(text), "-drive")
    assert drives == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=/var/lib/passthrough-wizard/win10_VARS.fd",
    ]
    assert "cp /usr/share/OVMF/OVMF_VARS_4M.fd /var/lib/passthrough-wizard/win10_VARS.fd" in text
    assert options_of(script_argv(qemu(inventory, ["01:00.0"], firmware="seabios")), "-drive") == []


def test_old_nvidia_options_hide_kvm_and_set_the_hyperv_vendor(inventory):
    argv = script_argv(qemu(inventory, ["01:00.0"], hide_kvm=True, hv_vendor_id="1234567890ab"))
    assert options_of(argv, "-cpu") == [
        "host,kvm=off,hv_relaxed,hv_vapic,hv_spinlocks=0x1fff,hv_vendor_id=1234567890ab"
    ]
    assert options_of(script_argv(qemu(inventory, ["01:00.0"])), "-cpu") == ["host"]


def test_hugepages_back_guest_memory_with_a_memory_backend(inventory):
    argv = script_argv(qemu(inventory, ["01:00.0"], hugepages=True, memory_mib=16384))
    assert options_of(argv, "-object") == [
        "memory-backend-file,id=ram0,size=16384M,mem-path=/dev/hugepages,prealloc=on"
    ]
    assert "memory-backend=ram0" in options_of(argv, "-machine")[0].split(",")
    assert options_of(argv, "-m") == ["16384"]


def test_i440fx_puts_devices_on_the_pci_bus_without_root_ports(inventory):
    argv = script_argv(qemu(inventory, ["01:00.0"], machine="i440fx", firmware="seabios"))
    assert options_of(argv, "-machine")[0].startswith("pc,")
    assert not [value for value in options_of(argv, "-device") if value.startswith("pcie-root-port")]
    gpu, audio = vfio_devices(argv)
    assert gpu.bus == audio.bus == "pci.0"
    assert gpu.guest_slot == audio.guest_slot


def test_each_line_is_one_option_shell_quoted(inventory):
    text = qemu(inventory, ["01:00.0"], rom_file="/roms/with space.rom", primary_gpu=True)
    body = text.split("\nexec ", 1)[1].splitlines()
    assert body[0] == "qemu-system-x86_64 \\"
    for line in body[1:-1]:
        assert line.startswith("  -") and line.endswith(" \\")
        tokens = shlex.split(line[:-2])
        assert len(tokens) == 2, line
        assert " ".join(shlex.quote(token) for token in tokens) == line.strip()[:-2]
    assert body[-1] == '  "$@"'
    assert (
        "'vfio-pci,host=0000:01:00.0,id=hostdev0,bus=rp0,addr=0x0.0,multifunction=on,romfile=/roms/with space.rom'"
        in text
    )


def test_script_runs_and_hands_qemu_exactly_its_arguments(inventory, tmp_path):
    spec = build_spec(inventory, ["01:00.0", "03:00.0"], name="win10", hugepages=True, hide_kvm=True)
    config = generate(inventory, spec, "qemu")
    run = run_qemu_script(config.text, tmp_path, "-drive", "file=/images/win 10.qcow2,if=virtio")
    lines, _ = arguments(spec)
    assert run.argv == [token for line in lines for token in line] + ["-drive", "file=/images/win 10.qcow2,if=virtio"]
    assert run.copied == [
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "/var/lib/passthrough-wizard/win10_VARS.fd",
    ]


def test_header_says_which_devices_were_added_and_what_the_host_lacks(make_tree):
    inventory = scan(make_tree(desktop(gpu_driver="nvidia", audio_driver="snd_hda_intel")))
    config = generate(inventory, build_spec(inventory, ["01:00.0"]), "qemu")
    header = config.text.split("\nset -e", 1)[0]
    assert all(line.startswith("#") or not line for line in header.splitlines())
    assert "0000:01:00.1 GP102 HDMI Audio Controller [10de:10ef] (added: function of the same physical device" in header
    assert "NOT READY" in header
    assert "[MISSING] 0000:01:00.0 is bound to vfio-pci." in header
    assert "It is on nvidia now." in header
    assert not config.ready


def test_notes_explain_the_options_that_appear(inventory):
    config = generate(inventory, build_spec(inventory, ["01:00.0"], hide_kvm=True, rombar=False), "qemu")
    for option in ("kvm=off", "rombar=0", "multifunction=on", "pcie-root-port", "vfio-pci", "if=pflash"):
        assert option.split("=")[0] in config.text
        assert config.notes[option]
    assert config.filename == "passthrough-vm.sh" and config.media_type == "text/x-shellscript"
