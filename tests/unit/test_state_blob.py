"""The state table's blobs read as the CLI reads them: plain, gzip or zstd, by their first bytes."""

from __future__ import annotations

import base64
import gzip

import zstandard

from clients.state_blob import state_blob

CHECKPOINT = b'{"version":3,"checkpoint":{"secrets_providers":{"type":"cloud"}}}'


def stored(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_plain_and_gzip_blobs_read_back_the_same():
    assert state_blob(stored(CHECKPOINT)) == CHECKPOINT
    assert state_blob(stored(gzip.compress(CHECKPOINT))) == CHECKPOINT
    assert state_blob(None) == b""


def test_zstd_blobs_read_back_with_or_without_their_size_in_the_frame():
    assert state_blob(stored(zstandard.ZstdCompressor().compress(CHECKPOINT))) == CHECKPOINT
    streamed = zstandard.ZstdCompressor().compressobj()
    assert state_blob(stored(streamed.compress(CHECKPOINT) + streamed.flush())) == CHECKPOINT
