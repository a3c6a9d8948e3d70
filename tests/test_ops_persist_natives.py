"""Binding at boot: what the plan says about each function's native driver."""

from __future__ import annotations

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.ops.persist import plan_persist_binding


def test_a_function_that_had_no_driver_is_said_so_not_called_unknown(tmp_path):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
            FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
        ]
    )  # fmt: skip
    root = write_tree(spec, tmp_path / "host")
    plan = plan_persist_binding(
        KernelDouble(root), ["0000:01:00.0"], native_drivers={"0000:01:00.0": None, "0000:01:00.1": "snd_hda_intel"}
    )
    assert "0000:01:00.0 had no driver on the host, so no softdep is needed for it." in plan.notes
    assert not any("not known" in note for note in plan.notes)
    assert "softdep snd_hda_intel pre: vfio-pci" in plan.diff
