import pytest

from passthrough.errors import InvalidAddress
from passthrough.pci.address import PciAddress, is_address, normalize


def test_full_address_round_trips():
    assert str(PciAddress.parse("0000:01:00.1")) == "0000:01:00.1"


def test_short_address_gets_domain_zero():
    assert normalize("01:00.0") == "0000:01:00.0"


def test_wide_domains_from_vmd_and_hypervisors_parse():
    address = PciAddress.parse("10000:00:04.0")
    assert address.domain == 0x10000
    assert str(address) == "10000:00:04.0"


def test_upper_case_hex_is_accepted_and_normalized():
    assert normalize("0000:0A:1F.7") == "0000:0a:1f.7"


def test_surrounding_whitespace_from_a_terminal_paste_is_forgiven():
    assert normalize(" 0000:01:00.0\n") == "0000:01:00.0"


@pytest.mark.parametrize(
    "text", ["", "01:00", "0000:01:00.8", "0000:01:20.0", "zz:00.0", "1:0.0", "000:01:00.0", "0000:01:00.0;rm"]
)
def test_malformed_addresses_are_refused_with_a_hint(text):
    with pytest.raises(InvalidAddress) as raised:
        PciAddress.parse(text)
    assert raised.value.hint and "0000:01:00.0" in raised.value.hint


def test_domain_can_be_required():
    with pytest.raises(InvalidAddress):
        PciAddress.parse("01:00.0", require_domain=True)


def test_non_text_is_refused():
    with pytest.raises(InvalidAddress):
        PciAddress.parse(1234)  # type: ignore[arg-type]


def test_functions_of_one_slot_share_a_slot_key():
    assert PciAddress.parse("0000:01:00.0").slot_key == PciAddress.parse("0000:01:00.1").slot_key
    assert PciAddress.parse("0000:01:00.0").slot_key != PciAddress.parse("0000:01:01.0").slot_key


def test_is_address_accepts_sysfs_function_names_only():
    assert is_address("0000:00:1f.6")
    assert not is_address("0000:00:02.1:pcie001")
    assert not is_address("00:1f.6")
    assert not is_address("pci0000:00")
