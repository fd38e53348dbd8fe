"""The one quantization rule of SPIC.

The encoder ``g_a`` ends in a sigmoid, so every latent value ``y`` lies in [0, 1]. A quantization
factor QF splits that interval into QF steps, giving QF + 1 integer symbols::

    symbol = clip(floor(y * QF + 1/2), 0, QF)        y_hat = symbol / QF

A larger QF means more levels, finer latents and more bits (the paper's λ = 1/QF is the step).
``floor(x + 1/2)`` is used instead of ``round`` because numpy and torch both round half to even,
but other runtimes may not; floor is the same everywhere. Training (``models/``), the edge and the
cloud all call these functions or their torch mirror, which the tests hold to the same outputs.
"""

from __future__ import annotations

import numpy as np

QF_MIN = 1
QF_MAX = 255  # QF travels as one byte in the bitstream header.
PAPER_QFS = (16, 48, 128)


def check_qf(qf: int) -> int:
    """Return ``qf`` as an int, or raise ``ValueError`` if it is not a valid quantization factor."""
    if isinstance(qf, bool) or int(qf) != qf or not QF_MIN <= int(qf) <= QF_MAX:
        raise ValueError(f"QF must be an integer in [{QF_MIN}, {QF_MAX}], got {qf!r}")
    return int(qf)


def alphabet_size(qf: int) -> int:
    """Number of distinct symbols a latent quantized at ``qf`` can take."""
    return check_qf(qf) + 1


def quantize(y: np.ndarray, qf: int) -> np.ndarray:
    """Map a bounded latent (values in [0, 1]) to integer symbols in [0, QF], as uint16."""
    qf = check_qf(qf)
    y = np.asarray(y, dtype=np.float32)
    # NaN would survive clip and turn into an arbitrary integer; map it to 0 explicitly.
    scaled = np.nan_to_num(y * np.float32(qf) + np.float32(0.5), nan=0.0)
    symbols: np.ndarray = np.clip(np.floor(scaled), 0, qf).astype(np.uint16)
    return symbols


def dequantize(symbols: np.ndarray, qf: int) -> np.ndarray:
    """Map integer symbols back to latent values in [0, 1], as float32."""
    qf = check_qf(qf)
    return np.asarray(symbols, dtype=np.float32) / np.float32(qf)
