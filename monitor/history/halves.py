"""float16 rows widened to float32 with integer SIMD ops: numpy's own float16 cast is scalar."""

from __future__ import annotations

import numpy as np

# A float16's exponent and mantissa, moved to where float32 keeps them, read as a float32 that
# is the float16's value times 2^-112 (float32's exponent bias 127 minus float16's 15), exactly,
# subnormals included; the sign bit, sign-extended from int16, is cleared from the exponent.
_SHIFT = 13
_MASK = np.uint32(0x8FFFE000).view(np.int32)
_SCALE = np.float32(2.0**112)


def widen(half: np.ndarray, work: np.ndarray | None = None) -> np.ndarray:
    """float16 `half` as float32, exactly (finite values); `work`, an int32 array of at least
    half.size elements, is reused for the result instead of allocating one."""
    flat = np.ascontiguousarray(half).view(np.int16)
    if work is None:
        work = np.empty(half.shape, dtype=np.int32)
    bits = work.reshape(-1)[: half.size].reshape(half.shape)
    np.copyto(bits, flat)
    np.left_shift(bits, _SHIFT, out=bits)
    np.bitwise_and(bits, _MASK, out=bits)
    out = bits.view(np.float32)
    np.multiply(out, _SCALE, out=out)
    return out
