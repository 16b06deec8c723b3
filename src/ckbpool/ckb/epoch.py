"""CKB's ``EpochNumberWithFraction``: a block's position in epochs, and cellbase maturity.

A header's ``epoch`` field, and the chain spec's ``params.cellbase_maturity``, pack three numbers into a u64
(nervosnetwork/ckb util/types/src/core/extras.rs): number (bits 0-23), index (bits 24-39) and length
(bits 40-55); its value is ``number + index / length`` epochs. A cellbase output of a block at epoch E may be
spent once the spending block's epoch >= E + cellbase_maturity (verification/src/transaction_verifier.rs,
``MaturityVerifier``; mainnet: 4 epochs, ckb's dev spec: 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

_NUMBER_BITS = 24
_INDEX_BITS = 16
_LENGTH_BITS = 16


@dataclass(frozen=True, slots=True)
class EpochNumberWithFraction:
    number: int
    index: int
    length: int

    def __post_init__(self) -> None:
        if not (0 <= self.number < 1 << _NUMBER_BITS):
            raise ValueError(f"epoch number {self.number} does not fit {_NUMBER_BITS} bits")
        if not (0 <= self.index < 1 << _INDEX_BITS) or not (0 <= self.length < 1 << _LENGTH_BITS):
            raise ValueError(f"epoch index/length {self.index}/{self.length} do not fit {_INDEX_BITS} bits")

    @classmethod
    def from_full_value(cls, value: int) -> EpochNumberWithFraction:
        number = value & ((1 << _NUMBER_BITS) - 1)
        index = (value >> _NUMBER_BITS) & ((1 << _INDEX_BITS) - 1)
        length = (value >> (_NUMBER_BITS + _INDEX_BITS)) & ((1 << _LENGTH_BITS) - 1)
        if length == 0:  # ckb's normalize(): a zero length means "whole epochs"
            return cls(number, 0, 1)
        return cls(number, index, length)

    def full_value(self) -> int:
        return (self.length << (_NUMBER_BITS + _INDEX_BITS)) | (self.index << _NUMBER_BITS) | self.number

    def to_rational(self) -> Fraction:
        return Fraction(self.number) + Fraction(self.index, self.length or 1)


def cellbase_is_mature(cellbase_epoch: int, current_epoch: int, cellbase_maturity: int) -> bool:
    """Whether a cellbase output from a block at ``cellbase_epoch`` can be spent in a block at ``current_epoch``
    (all three as packed full values, as the RPC reports them)."""
    threshold = (
        EpochNumberWithFraction.from_full_value(cellbase_maturity).to_rational()
        + EpochNumberWithFraction.from_full_value(cellbase_epoch).to_rational()
    )
    return EpochNumberWithFraction.from_full_value(current_epoch).to_rational() >= threshold
