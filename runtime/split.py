"""The split deployment in one place: the trunk runs once, each head reads the trunk's outputs.

:class:`SplitRunner` holds a trunk and its head parts (any objects that can run a feed) and is
what every caller of "trunk once -> heads" uses: the pipeline (per frame, on device-resident
taps), calibration (statistics and the accuracy report, on host arrays), the profiler's cost
model and the TensorRT self-test. docs/architecture.md, "The data path of a frame".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from edge.core.errors import BundleError


class HostRunner(Protocol):
    """What :meth:`SplitRunner.run` needs of a part: its input names and a host-array run."""

    @property
    def input_names(self) -> Sequence[str]: ...

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class SplitRunner:
    """``SplitRunner(trunk, {part: head}, merged=None)``.

    :meth:`run` (host arrays) runs the trunk once and the asked head parts on its outputs and
    returns every part's outputs. :meth:`taps` / :meth:`head` / :meth:`all_heads` are the same
    steps on a backend's :class:`~edge.runtime.backends.base.Taps` (device-resident on TensorRT,
    so a head reads the trunk's buffers without a copy), one step at a time for callers that
    decide or time each head separately.
    """

    def __init__(self, trunk: Any, heads: Mapping[str, Any], merged: Any = None) -> None:
        self.trunk = trunk
        self.heads = dict(heads)
        self.merged = merged

    # -- host arrays ----------------------------------------------------------------------------
    def run(
        self, feed: Mapping[str, np.ndarray], parts: Iterable[str] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """``{"trunk": trunk outputs, part: head outputs, ...}`` for ``parts`` (default: every
        head). A head's input comes from the trunk's outputs, or the feed when the trunk does not
        output it."""
        outs: dict[str, dict[str, np.ndarray]] = {"trunk": self.trunk.run(feed)}
        given = {**feed, **outs["trunk"]}
        for part in self.heads if parts is None else parts:
            head = self._head(part)
            outs[part] = head.run({n: given[n] for n in head.input_names})
        return outs

    # -- backend taps ---------------------------------------------------------------------------
    def taps(self, feed: Mapping[str, np.ndarray]) -> Any:
        """The trunk's outputs as taps (device-resident where the backend keeps them there)."""
        return self.trunk.run_taps(feed)

    def head(self, part: str, taps: Any, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """One head part's outputs on the trunk's ``taps``."""
        return dict(self._head(part).run_from_taps(taps, outputs))

    def all_heads(self, taps: Any) -> dict[str, np.ndarray]:
        """Every task's outputs on ``taps`` through the merged-heads part (one call)."""
        if self.merged is None:
            raise BundleError("this bundle has no merged heads part; run the heads one by one")
        return dict(self.merged.run_from_taps(taps))

    def _head(self, part: str) -> Any:
        try:
            return self.heads[part]
        except KeyError:
            raise BundleError(
                f"no head part '{part}' is loaded; loaded: {sorted(self.heads)}"
            ) from None
