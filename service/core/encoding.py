"""From model vectors to what a request asked for: Matryoshka truncation, normalisation and
the output encodings of sentence-transformers' `quantize_embeddings`.

int8/uint8 use per-dimension ranges computed at export time from a fixed calibration corpus
(stored in the manifest), so a text's bytes never depend on the batch it arrives in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from embedrpc.service.bundle.manifest import OutputCalibration, ValueRange
from embedrpc.service.errors import ErrorKind, RequestError


class Encoding(enum.Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"


def matryoshka(vectors: np.ndarray, dims: int, normalize: bool) -> np.ndarray:
    """The first `dims` components, re-normalised to unit length when `normalize`."""
    truncated = vectors[:, :dims]
    if not normalize:
        return np.ascontiguousarray(truncated)
    norms = np.linalg.norm(truncated, axis=1, keepdims=True)
    return truncated / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Range:
    minimum: np.ndarray
    maximum: np.ndarray


class Calibration:
    """Per-dimension value ranges of the calibration corpus's embeddings.

    `ranges[d]` belongs to vectors truncated to d dims and re-normalised; vectors truncated
    without re-normalisation are prefixes of full-size vectors, so they use the full-size range's
    prefix.
    """

    def __init__(self, ranges: dict[int, Range], full_size: int):
        self.ranges, self.full_size = ranges, full_size

    @classmethod
    def from_manifest(cls, block: "OutputCalibration | None", full_size: int) -> "Calibration":
        """From the manifest's calibration block (None: a bundle without one)."""
        ranges = {} if block is None else {
            int(dims): Range(np.asarray(r.min, np.float32), np.asarray(r.max, np.float32))
            for dims, r in block.ranges.items()}
        return cls(ranges, full_size)

    def range_for(self, dims: int, normalize: bool) -> Range:
        if normalize or dims == self.full_size:
            found = self.ranges.get(dims)
        else:
            full = self.ranges.get(self.full_size)
            found = Range(full.minimum[:dims], full.maximum[:dims]) if full else None
        if found is None:
            raise RequestError(ErrorKind.FAILED_PRECONDITION,
                               f"the bundle has no int8 calibration for {dims} dims; "
                               f"re-export the bundle", "encoding")
        return found


def compute_ranges(vectors: np.ndarray, dims_list: list[int]) -> dict[str, ValueRange]:
    """Manifest form of the ranges of `vectors` (unit rows) for each Matryoshka size."""
    out = {}
    for dims in dims_list:
        truncated = matryoshka(vectors, dims, normalize=True)
        out[str(dims)] = ValueRange(_float32_list(truncated.min(axis=0)),
                                    _float32_list(truncated.max(axis=0)))
    return out


def _float32_list(values: np.ndarray) -> list[float]:
    """Nine significant digits: enough for every float32 to survive JSON exactly."""
    return [float(f"{v:.9g}") for v in values.astype(np.float32)]


def quantize(vectors: np.ndarray, encoding: Encoding, value_range: Range | None = None
             ) -> np.ndarray:
    """`vectors` [n, dims] float32 in the requested encoding, computed as
    sentence-transformers' `quantize_embeddings(..., ranges=...)` does (values outside the
    calibration range saturate)."""
    if encoding is Encoding.FLOAT32:
        return vectors.astype(np.float32, copy=False)
    if encoding in (Encoding.BINARY, Encoding.UBINARY):
        bits = np.packbits(vectors > 0, axis=-1)
        return (bits.astype(np.int16) - 128).astype(np.int8) if encoding is Encoding.BINARY \
            else bits
    if value_range is None:
        raise ValueError(f"{encoding.value} needs a calibration range")
    starts = value_range.minimum.astype(np.float32)
    steps = (value_range.maximum.astype(np.float32) - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    levels = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return (levels - 128).astype(np.int8) if encoding is Encoding.INT8 else levels.astype(np.uint8)
