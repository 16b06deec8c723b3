"""Compact target <-> target <-> difficulty, as ckb-types' ``compact_to_target`` / ``target_to_compact``.

CKB's compact form is Bitcoin's nBits without the sign bit: exponent in the top byte, 24-bit mantissa.
"""

from __future__ import annotations

U256_MAX = (1 << 256) - 1

# btcpool's CKB difficulty scale for shares: difficulty 1 = 0xffff << 240 (used for V1 and share accounting).
SHARE_DIFF1_TARGET = 0xFFFF << 240


class TargetError(ValueError):
    """A compact target that decodes to zero or overflows 256 bits."""


def compact_to_target(compact: int) -> int:
    """Decode a compact target; raise TargetError for zero or overflowing values (the node rejects both)."""
    if not 0 <= compact <= 0xFFFFFFFF:
        raise TargetError(f"compact target {compact:#x} is not a u32")
    exponent = compact >> 24
    mantissa = compact & 0x00FFFFFF
    if exponent <= 3:
        target = mantissa >> (8 * (3 - exponent))
        overflow = False
    else:
        target = mantissa << (8 * (exponent - 3))
        overflow = mantissa != 0 and exponent > 32
    if overflow or target > U256_MAX:
        raise TargetError(f"compact target {compact:#x} overflows 256 bits")
    if target == 0:
        raise TargetError(f"compact target {compact:#x} is zero")
    return target


def target_to_compact(target: int) -> int:
    """Encode a target as compact (rounding the mantissa down, as the node does)."""
    if not 0 < target <= U256_MAX:
        raise TargetError(f"target {target:#x} is out of range 1..2^256-1")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        mantissa = target << (8 * (3 - size))
    else:
        mantissa = target >> (8 * (size - 3))
    # Unlike Bitcoin there is no sign bit, so a mantissa with its top bit set is kept as-is.
    return (size << 24) | mantissa


def target_to_difficulty(target: int) -> int:
    """Network difficulty as the node reports it: floor(2^256 / target)."""
    if target <= 0:
        raise TargetError("target must be positive")
    if target == 1:
        return U256_MAX  # 2^256 does not fit a U256; the node saturates the same way
    return (1 << 256) // target


def difficulty_to_target(difficulty: int) -> int:
    """Inverse of target_to_difficulty (difficulty 1 maps to the largest target)."""
    if difficulty <= 0:
        raise TargetError("difficulty must be positive")
    if difficulty == 1:
        return U256_MAX
    return (1 << 256) // difficulty


def share_difficulty_to_target(difficulty: float) -> int:
    """Share target for a share difficulty on btcpool's scale (diff-1 = 0xffff << 240)."""
    if difficulty <= 0:
        raise TargetError("share difficulty must be positive")
    if float(difficulty).is_integer():
        return SHARE_DIFF1_TARGET // int(difficulty)  # exact for the usual whole difficulties
    return min(U256_MAX, int(SHARE_DIFF1_TARGET / difficulty))


def target_to_share_difficulty(target: int) -> float:
    """Share difficulty of a target on btcpool's scale."""
    if target <= 0:
        raise TargetError("target must be positive")
    return SHARE_DIFF1_TARGET / target
