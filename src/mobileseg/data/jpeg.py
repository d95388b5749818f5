"""A structural check of JPEG byte streams: what Pillow decodes without complaint but is damaged.

libjpeg treats a scan that stops early (an end-of-image marker in the middle of the data, or a truncated file
under ``LOAD_TRUNCATED_IMAGES``) as a warning and fills the missing blocks with grey; Pillow drops the warning.
Walking the markers finds both, without decoding, in about 2 ms for a 500 kB photo.
"""

from __future__ import annotations

_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RST0-7, SOI: markers without a length field
_EOI = b"\xff\xd9"


def jpeg_problem(data: bytes) -> str | None:
    """What is structurally wrong with a JPEG byte stream, or None.

    Walks the marker segments and the entropy-coded scans to the end-of-image marker. Found: a stream that ends
    before it (truncated), and data that carries on after it and ends in another end-of-image marker: a scan cut
    short by an early EOI (e.g. bytes overwritten mid-file), which libjpeg decodes by filling the rest with grey.
    Data after the EOI that is another image (MPO, appended thumbnails), padding, a repeated EOI or a vendor
    trailer that does not end in EOI is accepted, as every decoder does.

    Example:
        >>> jpeg_problem(bytes([0xFF, 0xD8, 0xFF, 0xD9])) is None
        True
    """
    n, pos = len(data), 2
    if not data.startswith(b"\xff\xd8"):
        return "not a JPEG stream (no start-of-image marker)"
    while True:
        pos = data.find(b"\xff", pos)  # bytes between segments are skipped, as libjpeg does (with a warning)
        while 0 <= pos < n and data[pos] == 0xFF:
            pos += 1
        if pos < 0 or pos >= n:
            return "truncated (the file ends before its end-of-image marker)"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if marker in _STANDALONE:
            continue
        if pos + 2 > n or pos + int.from_bytes(data[pos : pos + 2], "big") > n:
            return "truncated (the file ends inside a marker segment)"
        pos += int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            pos = _scan_end(data, pos)
            if pos < 0:
                return "truncated (the file ends inside the image data)"
    tail = data[pos:].rstrip(b"\x00")
    if tail.lstrip(b"\x00").startswith(b"\xff\xd8") or not tail.endswith(_EOI):
        return None
    if tail.replace(_EOI, b"").strip(b"\x00\xff"):
        return (
            f"image data ends at an early end-of-image marker (byte {pos - 2} of {n}) and {len(tail)} bytes of "
            "image data follow it: the file is corrupt (the rest would decode as grey)"
        )
    return None


def _scan_end(data: bytes, pos: int) -> int:
    """Index of the marker that ends entropy-coded data starting at ``pos`` (-1: none). Inside a scan 0xFF is
    followed by 0x00 (stuffing), 0xD0-0xD7 (restart markers) or more 0xFF (fill); anything else is a marker."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return -1
        nxt = data[pos + 1]
        if nxt != 0x00 and nxt != 0xFF and not 0xD0 <= nxt <= 0xD7:
            return pos
        pos += 1
