"""A gzip body made of a page's changing parts and a large part compressed once, ahead of time.

The groups page of a big host is a few kilobytes that change per request (the user, the
CSRF token, the filter) around ~800 kB of group HTML that changes only with the snapshot.
Compressing that whole page on every request costs more than everything else the request
does. So the large part is deflated once, ending on a full flush (byte-aligned, and
referring to nothing before it), and each response deflates only its own head and tail
around it: a deflate stream may be continued with blocks made by another compressor as
long as the earlier ones end byte-aligned and not final (this is how pigz compresses in
parallel). The gzip trailer's CRC-32 and length cover the whole text.

Plain Python (zlib), no Django; tested against gzip.decompress.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from dataclasses import dataclass

LEVEL = 6
_WBITS_RAW = -15  # raw deflate: gzip's header and trailer are written here


@dataclass(frozen=True)
class Compressed:
    """A text deflated on its own, ready to sit between other parts of a gzip body."""

    data: bytes  # the plain bytes (for clients that do not take gzip)
    deflated: bytes  # non-final deflate blocks, byte-aligned at the end


def compress_part(data: bytes, level: int = LEVEL) -> Compressed:
    compressor = zlib.compressobj(level, zlib.DEFLATED, _WBITS_RAW)
    deflated = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    return Compressed(data=data, deflated=deflated)


def _header() -> bytes:
    # A random file name of random length varies the size of every response, as Django's own
    # GZipMiddleware does against BREACH-style length oracles ("Heal the Breach").
    name = secrets.token_hex(secrets.randbelow(50) + 1).encode()
    flags_fname = 0x08
    return struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags_fname, 0, 0, 255) + name + b"\0"


def gzip_around(head: bytes, middle: Compressed, tail: bytes, level: int = LEVEL) -> bytes:
    """The gzip of ``head + middle.data + tail``, deflating only ``head`` and ``tail`` now."""
    first = zlib.compressobj(level, zlib.DEFLATED, _WBITS_RAW)
    start = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(level, zlib.DEFLATED, _WBITS_RAW)
    end = last.compress(tail) + last.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, zlib.crc32(middle.data, zlib.crc32(head)))
    size = (len(head) + len(middle.data) + len(tail)) & 0xFFFFFFFF
    return b"".join((_header(), start, middle.deflated, end, struct.pack("<II", crc, size)))
