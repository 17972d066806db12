"""The state table's blobs read as the CLI reads them: plain, gzip or zstd, by their first bytes."""

from __future__ import annotations

import base64
import gzip

import pytest

from clients.state_blob import ZSTD_MAGIC, state_blob

CHECKPOINT = b'{"version":3,"checkpoint":{"secrets_providers":{"type":"cloud"}}}'


def stored(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_plain_and_gzip_blobs_read_back_the_same():
    assert state_blob(stored(CHECKPOINT)) == CHECKPOINT
    assert state_blob(stored(gzip.compress(CHECKPOINT))) == CHECKPOINT
    assert state_blob(None) == b""


def test_a_zstd_blob_without_the_package_names_what_is_missing():
    try:
        import zstandard
    except ImportError:
        with pytest.raises(RuntimeError, match="needs the zstandard package"):
            state_blob(stored(ZSTD_MAGIC + b"\x00" * 8))
    else:
        assert state_blob(stored(zstandard.ZstdCompressor().compress(CHECKPOINT))) == CHECKPOINT
