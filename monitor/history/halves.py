"""float16 rows stored without subnormals and widened to float32 with integer SIMD ops."""

from __future__ import annotations

import numpy as np

# A float16's exponent and mantissa, moved to where float32 keeps them, read as a float32 that
# is the float16's value times 2^-112 (float32's exponent bias 127 minus float16's 15), exactly,
# subnormals included; the sign bit, sign-extended from int16, is cleared from the exponent.
_SHIFT = 13
_MASK = np.uint32(0x8FFFE000).view(np.int32)
SCALE = np.float32(2.0**112)
_EXPONENT_BITS = np.uint16(0x7C00)


def to_half(rows: np.ndarray) -> np.ndarray:
    """`rows` as float16 with the subnormals (|x| < 2^-14, about 0.1 % of a 512-d unit vector's
    components) set to zero: widened, they would be float32 subnormals, whose microcode assists
    slow every pass over them several-fold. Each such value moves by less than 6.2e-5."""
    half = np.asarray(rows).astype(np.float16)
    half[(half.view(np.uint16) & _EXPONENT_BITS) == 0] = 0
    return half


def widen_scaled(half: np.ndarray, work: np.ndarray | None = None) -> np.ndarray:
    """float16 `half` as float32 times 2^-112, exactly (finite values): one pass fewer than
    `widen`, for a product whose other factor carries the 2^112. `work`, an int32 array of at
    least half.size elements, is reused for the result instead of allocating one."""
    flat = np.ascontiguousarray(half).view(np.int16)
    if work is None:
        work = np.empty(half.shape, dtype=np.int32)
    bits = work.reshape(-1)[: half.size].reshape(half.shape)
    np.copyto(bits, flat)
    np.left_shift(bits, _SHIFT, out=bits)
    np.bitwise_and(bits, _MASK, out=bits)
    out: np.ndarray = bits.view(np.float32)
    return out


def widen(half: np.ndarray, work: np.ndarray | None = None) -> np.ndarray:
    """float16 `half` as float32, exactly (finite values); `work` as for `widen_scaled`."""
    out = widen_scaled(half, work)
    np.multiply(out, SCALE, out=out)
    return out
