"""How the metrics walk a data set: consecutive batches of at most `batch_size` samples."""

from __future__ import annotations

from typing import Iterator


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` covering range(n)."""
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))
