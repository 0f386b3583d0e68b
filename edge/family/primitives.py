"""The fixed, non-learnable primitives (NLPs), generated deterministically from a seed.

Kernels are generated with numpy (``np.random.default_rng([seed, stage, layer, index])``) so that
the same config gives the same bank on every machine and every torch version; the model stores
them as buffers, and a checkpoint's buffers are checked against a regeneration on load.

Every primitive maps C channels to C channels at the layer's stride:
- ``lbc``: sparse ternary {-1, 0, +1} 3x3 (density ``lbc_density``), as in Local Binary CNNs,
  scaled by 1/sqrt(fan-in non-zeros) so responses keep unit scale;
- ``gauss``: frozen random Gaussian 3x3, N(0, 1/fan_in);
- ``dilated``: like ``gauss`` at dilation 2 (a 5x5 receptive field);
- ``avgpool``: 3x3 average, zero padding counted (count_include_pad=True): a linear filter;
- ``identity``: the input (subsampled at stride 2);
- ``maxpool``: 3x3 max, the one nonlinear primitive.
"""

from __future__ import annotations

import numpy as np

CONV_PRIMITIVES = frozenset({"lbc", "gauss", "dilated"})


def primitive_kernel(
    kind: str, channels: int, *, depthwise: bool, density: float, seed: int, where: tuple[int, ...]
) -> np.ndarray | None:
    """The fixed 3x3 kernel of a conv primitive, shape (C, C, 3, 3) or (C, 1, 3, 3) when depthwise;
    None for primitives that are not convolutions (avgpool, identity, maxpool)."""
    if kind not in CONV_PRIMITIVES:
        return None
    rng = np.random.default_rng([seed, *where])
    fan_in = 9 if depthwise else 9 * channels
    shape = (channels, 1 if depthwise else channels, 3, 3)
    if kind == "lbc":
        nonzero = rng.random(shape) < density
        signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        kernel = nonzero * signs / np.sqrt(max(density * fan_in, 1.0))
    else:  # gauss, dilated
        kernel = rng.standard_normal(shape) / np.sqrt(fan_in)
    return kernel.astype(np.float32)


def dilation_of(kind: str) -> int:
    return 2 if kind == "dilated" else 1


def dense_kernel(
    kind: str, kernel: np.ndarray | None, channels: int, *, depthwise: bool
) -> np.ndarray:
    """The primitive as a dense (C, C, 5, 5) kernel on a 5x5 lattice (centre at [2, 2]).

    Every linear primitive is a convolution: a dilated 3x3 embeds in a 5x5 kernel, avgpool is
    1/9 on the 3x3 centre of the diagonal, identity is 1 at the centre of the diagonal. The
    kernel is meant for padding 2 at the layer's stride. Raises ValueError for ``maxpool``.
    """
    out = np.zeros((channels, channels, 5, 5), dtype=np.float64)
    eye = np.arange(channels)
    if kind == "identity":
        out[eye, eye, 2, 2] = 1.0
    elif kind == "avgpool":
        out[eye, eye, 1:4, 1:4] = 1.0 / 9.0
    elif kind in CONV_PRIMITIVES:
        assert kernel is not None
        if depthwise:
            full = np.zeros((channels, channels, 3, 3), dtype=np.float64)
            full[eye, eye] = kernel[:, 0]
        else:
            full = kernel.astype(np.float64)
        if kind == "dilated":
            out[:, :, 0:5:2, 0:5:2] = full
        else:
            out[:, :, 1:4, 1:4] = full
    else:
        raise ValueError(f"primitive '{kind}' is not linear and has no kernel")
    return out
