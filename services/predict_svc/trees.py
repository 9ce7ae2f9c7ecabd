"""A fitted gradient-boosted tree ensemble as plain numpy arrays, evaluated without sklearn.

Every tree's nodes sit in one set of flat arrays; all trees are walked at once, one
level per step, so predicting one row costs a few dozen array operations and serving
needs neither scikit-learn nor pandas in memory. The split rules are those of
scikit-learn's HistGradientBoosting predictor on raw data (`_predictor.pyx`): NaN and
unknown categories follow the node's missing-value branch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]
Bitsets = npt.NDArray[np.uint32]


@dataclass(frozen=True)
class TreeEnsemble:
    """Trees over float features; leaves point to themselves, so walking stops there."""

    baseline: float
    roots: Ints
    feature: Ints
    threshold: Floats
    missing_left: Bools
    left: Ints
    right: Ints
    value: Floats
    is_categorical: Bools
    # Row in `left_bitsets` of a categorical split, and row in `known_bitsets` of its
    # feature: the categories that go left, and those seen in training.
    left_row: Ints
    known_row: Ints
    left_bitsets: Bitsets
    known_bitsets: Bitsets
    depth: int

    def raw(self, x: Floats) -> Floats:
        """The summed leaf values plus the baseline, one per row of `x` (rows x features)."""
        node = np.repeat(self.roots[np.newaxis, :], len(x), axis=0)
        rows = np.arange(len(x))[:, np.newaxis]
        for _ in range(self.depth):
            node = np.where(self._goes_left(x[rows, self.feature[node]], node), *self._kids(node))
        summed: Floats = self.baseline + self.value[node].sum(axis=1)
        return summed

    def probability(self, x: Floats) -> Floats:
        """The positive class's probability for a binary log-loss ensemble (the logistic)."""
        return 1.0 / (1.0 + np.exp(-self.raw(x)))

    def _kids(self, node: Ints) -> tuple[Ints, Ints]:
        return self.left[node], self.right[node]

    def _goes_left(self, values: Floats, node: Ints) -> Bools:
        missing = np.isnan(values)
        numeric = np.where(missing, self.missing_left[node], values <= self.threshold[node])
        categorical = self.is_categorical[node]
        if not categorical.any():
            return numeric
        code = np.where(missing | (values < 0), 0, values).astype(np.intp) & 0xFF
        in_left = _member(self.left_bitsets, self.left_row[node], code)
        known = _member(self.known_bitsets, self.known_row[node], code)
        # Negative, NaN or never-seen categories take the missing-value branch.
        unusable = missing | (values < 0) | ~(in_left | known)
        by_category = np.where(unusable, self.missing_left[node], in_left)
        return np.where(categorical, by_category, numeric)

    def to_bytes(self) -> bytes:
        """The arrays as an `.npz` archive: no pickle, so loading runs no code."""
        buffer = io.BytesIO()
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TreeEnsemble:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            loaded = {name: archive[name] for name in archive.files}
        return cls(
            baseline=float(loaded.pop("baseline")),
            depth=int(loaded.pop("depth")),
            **loaded,
        )


def _member(bitsets: Bitsets, row: Ints, code: Ints) -> Bools:
    """Whether `code` is in the 256-bit set at `row` (eight 32-bit words per row)."""
    words = bitsets[row, code >> 5]
    found: Bools = ((words >> (code & 31).astype(np.uint32)) & 1).astype(bool)
    return found
