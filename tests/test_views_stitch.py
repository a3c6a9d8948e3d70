"""stitch.py: a gzip body from a per-request head and tail around a part deflated ahead of time."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from webui.wizard.stitch import compress_part, gzip_around

GROUP = b'<tbody class="group group-viable" id="group-%d"><tr><td>01:%02x.0</td></tr></tbody>'


@pytest.mark.parametrize("middle_size", [0, 1, 1000, 70_000, 900_000])
def test_the_body_decompresses_to_head_middle_tail(middle_size):
    middle = b"".join(GROUP % (i, i % 256) for i in range(middle_size // 60)) + os.urandom(middle_size % 60)
    kept = compress_part(middle)
    body = gzip_around(b"<html><body>", kept, b"</body></html>")
    assert gzip.decompress(body) == b"<html><body>" + middle + b"</body></html>"
    # zlib in gzip mode (what browsers run) reads it to its end, with nothing left over
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflater.decompress(body) + inflater.flush() == b"<html><body>" + middle + b"</body></html>"
    assert inflater.eof and inflater.unused_data == b""


def test_one_kept_part_serves_many_different_heads():
    kept = compress_part(b"".join(GROUP % (i, i % 256) for i in range(5000)))
    for user in ("vera", "otto", "a" * 5000):
        head = f"<header>{user}</header>".encode()
        assert gzip.decompress(gzip_around(head, kept, b"!")) == head + kept.data + b"!"


def test_the_kept_part_is_compressed_and_the_response_size_varies():
    kept = compress_part(b"".join(GROUP % (i, i % 256) for i in range(10_000)))
    assert len(kept.deflated) < len(kept.data) / 10
    sizes = {len(gzip_around(b"head", kept, b"tail")) for _ in range(20)}
    assert len(sizes) > 1  # a random-length file name against length oracles (BREACH)
