"""The data behind the groups page and the wizard (catalog.py, review.py), on real machines' trees."""

from __future__ import annotations

import pytest

from passthrough import readiness
from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from webui.wizard.catalog import (
    NEEDS_CONFIRMATION,
    NOT_VIABLE,
    VIABLE,
    filter_cards,
    group_card,
    group_cards,
    ungrouped,
)
from webui.wizard.review import candidates, cmdline_edits, review


@pytest.fixture(scope="module")
def machines(tmp_path_factory) -> dict[str, tuple[Inventory, dict]]:
    made = {}
    for name in ("asokolsky-duo", "mapmanagement-b550", "schplorg-t480"):
        root = write_tree(realworld.MACHINES[name](), tmp_path_factory.mktemp(name))
        made[name] = (scan(root), readiness.report(root))
    return made


def cards_by_id(inventory: Inventory) -> dict:
    return {card.id: card for card in group_cards(inventory)}


def test_each_group_gets_one_of_three_verdicts(machines):
    cards = cards_by_id(machines["asokolsky-duo"][0])
    assert cards[2].verdict == VIABLE and cards[2].passable
    assert cards[14].verdict == NEEDS_CONFIRMATION and cards[14].passable
    assert cards[14].confirm_phrase == "0000:05:00.0"
    assert cards[10].verdict == NOT_VIABLE and not cards[10].passable
    assert cards[6].verdict == NOT_VIABLE and cards[6].first_endpoint is None


def test_the_blockers_are_the_reasons_not_the_description_of_the_group(machines):
    cards = cards_by_id(machines["asokolsky-duo"][0])
    assert [reason.split(" is ")[0] for reason in cards[10].blocked] == [
        "00:1f.0 (Z370 Chipset LPC/eSPI Controller)",
        "00:1f.4 (200 Series/Z370 Chipset Family SMBus Controller)",
    ]
    assert cards[1].blocked == [
        "00:00.0 (8th Gen Core Processor Host Bridge/DRAM Registers) is a host bridge held by skl_uncore; "
        "it belongs to the platform."
    ]
    assert cards[6].blocked == ["Only bridges are in this group: there is no device to pass through."]


def test_a_group_blocked_for_more_than_host_critical_members_cannot_be_confirmed_through(machines):
    inventory = machines["asokolsky-duo"][0]
    group = inventory.group(10)
    group.host_critical = ["0000:00:1f.3"]
    inventory.host_critical = {**inventory.host_critical, "0000:00:1f.3": ["pretend"]}
    card = group_card(inventory, group)
    assert card.verdict == NOT_VIABLE and card.confirm_phrase is None
    assert any("SMBus" in reason for reason in card.blocked)


def test_the_boot_gpu_is_marked_only_while_the_console_holds_it(machines):
    cards = cards_by_id(machines["mapmanagement-b550"][0])
    boot = next(card for card in cards.values() if "0000:04:00.0" in card.group.devices)
    assert boot.boot_gpu is not None and boot.boot_gpu.address == "0000:04:00.0"
    duo = cards_by_id(machines["asokolsky-duo"][0])
    assert duo[0].boot_gpu is None  # the iGPU booted, but no console sits on it in this host's context


def test_filters_keep_whole_groups(machines):
    cards = group_cards(machines["asokolsky-duo"][0])
    assert [card.id for card in filter_cards(cards, "GT 1030")] == [2]
    assert [card.id for card in filter_cards(cards, "10de:0fb8")] == [2]  # the audio's ids find its group
    assert [card.id for card in filter_cards(cards, "nouveau intel")] == []
    assert [card.id for card in filter_cards(cards, "", "network")] == [11, 12, 13]
    assert [card.id for card in filter_cards(cards, "05:00.0")] == [14]
    assert len(filter_cards(cards)) == len(cards)


def test_functions_without_a_group_are_listed_apart(tmp_path):
    from tests.web_support import no_iommu_host

    inventory = scan(write_tree(no_iommu_host(), tmp_path / "bare"))
    assert group_cards(inventory) == []
    assert [function.address for function in ungrouped(inventory)] == ["0000:00:00.0", "0000:01:00.0"]


def test_the_picker_lists_gpus_first_one_entry_per_card(machines):
    found, vfs = candidates(machines["asokolsky-duo"][0])
    assert [candidate.function.address for candidate in found][:2] == ["0000:00:02.0", "0000:01:00.0"]
    assert [candidate.kind for candidate in found][:4] == ["gpu", "gpu", "network", "network"]
    gpu = found[1]
    assert [(other.address, why) for other, why in gpu.moves_with] == [
        ("0000:01:00.1", "another function of the same card")
    ]
    assert "0000:01:00.1" not in [candidate.function.address for candidate in found]
    assert vfs == 0


def test_a_card_split_over_two_groups_says_its_other_half_has_to_go_too(machines):
    inventory, report = machines["mapmanagement-b550"]
    found, _ = candidates(inventory)
    vega = next(candidate for candidate in found if candidate.function.address == "0000:08:00.0")
    assert [(other.address, "part of the same card" in why) for other, why in vega.moves_with] == [
        ("0000:08:00.1", True)
    ]
    plan = review(inventory, "0000:08:00.0", report)
    assert [function.address for function in plan.companions] == ["0000:08:00.1"]
    assert any("sits in IOMMU group 19: this bind does not move it" in risk for risk in plan.risks)
    assert any("AMD Vega 10 GPU, known for the reset bug" in risk for risk in plan.risks)


def test_the_review_of_the_boot_gpu_speaks_of_its_console_and_its_host_critical_reasons(machines):
    inventory, report = machines["mapmanagement-b550"]
    plan = review(inventory, "0000:04:00.0", report)
    assert plan.card.confirm_phrase == "0000:04:00.0"
    assert "is the GPU the firmware booted with" in plan.console
    assert any("is host-critical: the framebuffer console (vtcon1) is bound" in risk for risk in plan.risks)


def test_the_review_of_the_gt_1030_moves_its_two_functions_and_keeps_the_bridge(machines):
    inventory, report = machines["asokolsky-duo"]
    plan = review(inventory, "0000:01:00.0", report)
    assert [function.address for function in plan.moves] == ["0000:01:00.0", "0000:01:00.1"]
    assert [function.address for function in plan.stays] == ["0000:00:01.0"]
    assert plan.console is None and plan.companions == []
    assert plan.native_drivers == {"0000:01:00.0": None, "0000:01:00.1": None}
    assert any("Give back to the host" in line for line in plan.undo)
    assert review(inventory, "0000:09:00.0", report) is None


def test_command_line_edits_come_from_the_readiness_plans_as_diffs(machines):
    _, report = machines["schplorg-t480"]
    (edit,) = cmdline_edits(report)
    assert (edit.check_id, edit.add, edit.remove) == ("iommu_passthrough_mode", ["iommu=pt"], [])
    (path, diff), *_ = edit.diffs
    assert path == "/etc/default/grub"
    assert "-GRUB_CMDLINE_LINUX=" in diff and "+GRUB_CMDLINE_LINUX=" in diff and "iommu=pt" in diff
    (without_files,) = cmdline_edits(machines["asokolsky-duo"][1])
    assert without_files.diffs == [] and "iommu=pt" in without_files.fix
