"""configgen.safe: each context's one function, checked against how its reader reads it back."""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from passthrough.configgen import ConfigError
from passthrough.configgen.safe import (
    comment_text,
    exact_value,
    powershell_string,
    shell_word,
    vmx_value,
    xml_comment_text,
)

ANY_TEXT = st.text(st.characters(exclude_categories=()))
PLAIN_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf")))
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@pytest.mark.parametrize(
    "value, shown",
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x00\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f"),
        ("\x85\u2028\u2029", "\\x85\\u2028\\u2029"),
        ("\u202eevil", "\\u202eevil"),
        ("\udcff", "\\udcff"),
        ("$(reboot) `id` '\" <hostdev>", "$(reboot) `id` '\" <hostdev>"),
    ],
)
def test_comment_text_shows_control_characters_as_escapes(value, shown):
    assert comment_text(value) == shown


@given(ANY_TEXT)
@example("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
def test_comment_text_is_always_one_printable_line(value):
    text = comment_text(value)
    assert CONTROL.search(text) is None
    assert len(("#" + text).splitlines()) == 1
    text.encode("utf-8")


@given(ANY_TEXT)
@example("-->")
@example("---")
@example("<!-- -- -->")
def test_xml_comment_text_never_holds_a_double_dash(value):
    text = xml_comment_text(value)
    assert "--" not in text and CONTROL.search(text) is None


def vmx_decode(quoted: str) -> str:
    """How VMware (and libvirt's vmx code) read a value back: |XX is the byte XX."""
    assert quoted[0] == quoted[-1] == '"' and '"' not in quoted[1:-1]
    data = re.sub(rb"\|([0-9A-Fa-f]{2})", lambda match: bytes([int(match.group(1), 16)]), quoted[1:-1].encode())
    return data.decode("utf-8", "surrogateescape")


@given(ANY_TEXT.filter(lambda value: not re.search("[\ud800-\udc7f\udd00-\udfff]", value)))
@example('a "quoted" | piped |22 value')
@example("line\nbreak\u2028")
@example("\udcff")
def test_vmx_value_reads_back_exactly_and_stays_on_its_line(value):
    quoted = vmx_value(value)
    assert vmx_decode(quoted) == value
    assert CONTROL.search(quoted) is None


def test_vmx_value_escapes_as_vmware_does():
    assert vmx_value('My "VM" | 2') == '"My |22VM|22 |7C 2"'
    assert vmx_value("a\nb") == '"a|0Ab"'


@given(PLAIN_TEXT)
@example("it's")
@example("$(reboot); `id`")
def test_shell_word_is_one_word_that_reads_back_exactly(value):
    assert shlex.split(shell_word(value, "value")) == [value]


@pytest.mark.parametrize("value", ["it's", "it\u2019s", "\u2018quoted\u2019", "\u201a\u201b", "$env:PATH"])
def test_powershell_string_doubles_every_quote_powershell_closes_on(value):
    quoted = powershell_string(value, "value")
    inside = quoted[1:-1]
    # Undoubling every quote character must give the value back, and no quote may stand alone.
    assert re.sub("(['\u2018\u2019\u201a\u201b])\\1", r"\1", inside) == value
    assert not re.search(
        "(?<!['\u2018\u2019\u201a\u201b])['\u2018\u2019\u201a\u201b](?!['\u2018\u2019\u201a\u201b])", inside
    )


@pytest.mark.parametrize("function", [shell_word, powershell_string, exact_value])
@pytest.mark.parametrize("value", ["/roms/a\nb.rom", "/roms/\x1b[31m", "a\u2028b", "a\x85b", "a\x00b", "\udcff"])
def test_exact_values_with_a_control_character_are_refused_in_one_line(function, value):
    with pytest.raises(ConfigError) as caught:
        function(value, "ROM file")
    message = str(caught.value)
    assert "ROM file" in message and CONTROL.search(message) is None
