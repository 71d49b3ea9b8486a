"""Checksums remembered by file identity: a start does not re-read unchanged gigabytes, and a
changed file is always read again."""

from __future__ import annotations

import os
import shutil

import pytest

from embedrpc.service.bundle import checksums as filehashes
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.checksums import FileHashes
from embedrpc.service.bundle.layout import sha256_file
from embedrpc.service.bundle.manifest import BundleError


@pytest.fixture()
def reads(monkeypatch):
    """The files whose bytes FileHashes actually read."""
    seen = []

    def counting(path):
        seen.append(path)
        return sha256_file(path)

    monkeypatch.setattr(filehashes, "sha256_file", counting)
    return seen


def test_an_unchanged_file_is_read_once(tmp_path, reads):
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(4096))
    hashes = FileHashes(tmp_path / "cache")
    first = hashes.sha256(data)
    again = FileHashes(tmp_path / "cache").sha256(data)  # as a new process would
    assert first == again == sha256_file(data)
    assert len(reads) == 1


def test_a_rewrite_with_the_same_size_and_mtime_is_read_again(tmp_path, reads):
    data = tmp_path / "weights.bin"
    data.write_bytes(b"a" * 4096)
    hashes = FileHashes(tmp_path / "cache")
    before = hashes.sha256(data)
    stat = data.stat()
    data.write_bytes(b"b" * 4096)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime set back; ctime moves on
    assert hashes.sha256(data) == sha256_file(data) != before
    assert len(reads) == 2


def test_a_file_replaced_by_a_copy_is_read_again(tmp_path, reads):
    data, other = tmp_path / "weights.bin", tmp_path / "other.bin"
    data.write_bytes(b"a" * 4096)
    other.write_bytes(b"c" * 4096)
    hashes = FileHashes(tmp_path / "cache")
    hashes.sha256(data)
    shutil.copy2(other, tmp_path / "incoming.bin")
    os.replace(tmp_path / "incoming.bin", data)  # a new inode with the old one's times
    assert hashes.sha256(data) == sha256_file(other)


def test_an_unreadable_or_corrupt_cache_only_costs_a_reread(tmp_path, reads):
    data = tmp_path / "weights.bin"
    data.write_bytes(b"x" * 100)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / filehashes.FILE_NAME).write_text("{not json")
    assert FileHashes(cache).sha256(data) == sha256_file(data)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    assert FileHashes(blocked).sha256(data) == sha256_file(data)


def test_bundle_verify_uses_the_cache_and_still_catches_corruption(eos_bundle, tmp_path,
                                                                   reads):
    copy = tmp_path / "bundle"
    shutil.copytree(eos_bundle, copy)
    hashes = FileHashes(tmp_path / "cache")
    Bundle(copy, hashes=hashes).verify(["onnx-int8"])
    verified = len(reads)
    Bundle(copy, hashes=hashes).verify(["onnx-int8"])
    assert len(reads) == verified  # a second start reads nothing
    weights = copy / "onnx/int8/model.onnx"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))
    with pytest.raises(BundleError, match="model.onnx: sha256 does not match"):
        Bundle(copy, hashes=hashes).verify(["onnx-int8"])
