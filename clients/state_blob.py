"""A blob of the `postgres://` state backend, as bytes.

The CLI's postgres bucket stores every object as `{"data": "<base64>"}` in a JSON
column; a stack file is plain JSON, or zstd (the deploy session has the CLI
compress it: PULUMI_DIY_BACKEND_ZSTD), or gzip (PULUMI_DIY_BACKEND_GZIP), and the
CLI itself reads all three by their first bytes. So must whoever reads the table directly (the
bootstrap's check for a stack's state, the tests)."""

from __future__ import annotations

import base64
import gzip

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def state_blob(data: str | None) -> bytes:
    """The object's content from the column's `data` field (base64), uncompressed."""
    raw = base64.b64decode(data or "")
    if raw.startswith(GZIP_MAGIC):
        return gzip.decompress(raw)
    if raw.startswith(ZSTD_MAGIC):
        import zstandard  # (only for a zstd file: the session's; 0.02 s)

        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw
