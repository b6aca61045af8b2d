"""Compression of a writer's byte stream, applied before upload.

Compressing before the uploader means size, md5 and sha256 are those of the
stored bytes, with nothing read back.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

GZIP_EXTENSION = ".gz"
GZIP_CONTENT_TYPE = "application/gzip"
#: zlib's default: most of level 9's ratio at a fraction of its cost.
GZIP_LEVEL = 6


def gzip_chunks(chunks: Iterable[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """One gzip member over the whole stream, in memory bounded by zlib's window.

    Every input chunk yields one (maybe empty) output chunk, so the consumer
    keeps its rhythm for progress and cancel checks while zlib buffers.
    """
    z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer
    for chunk in chunks:
        yield z.compress(chunk)
    yield z.flush()
