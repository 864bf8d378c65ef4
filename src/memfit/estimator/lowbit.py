"""Bytes of low-bit Adam state (the count lives with the technique, `techniques.lowbit`)."""

from memfit.techniques.lowbit import (
    LOW_BIT,
    MIN_QUANTIZED_NUMEL,
    low_bit_state_bytes,
    state_bytes_for,
)

__all__ = ["LOW_BIT", "MIN_QUANTIZED_NUMEL", "low_bit_state_bytes", "state_bytes_for"]
