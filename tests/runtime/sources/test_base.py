"""What every source shares (edge.runtime.sources.base): options, image conversion, redaction.

The base class's state checks run through real sources in test_runtime_sources.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.core.errors import ConfigError, SourceError
from edge.runtime.sources.base import SourceOptions, as_bgr, redact_uri


def test_redact_uri() -> None:
    assert redact_uri("rtsp://u:p@h/x") == "rtsp://***@h/x"
    assert redact_uri('rtspsrc location="rtsp://u:p@h:554/x" ! a') == (
        'rtspsrc location="rtsp://***@h:554/x" ! a'
    )
    assert redact_uri("rtsp://h/x") == "rtsp://h/x"


def test_source_options_are_validated() -> None:
    for kwargs in (
        {"width": 0},
        {"fps": -1.0},
        {"backoff_initial_s": 0.0},
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
        {"read_timeout_s": 0.0},
        {"fourcc": "MJPEG"},
    ):
        with pytest.raises(ConfigError):
            SourceOptions(**kwargs)


def test_as_bgr_converts_gray_and_bgra_and_rejects_others() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = as_bgr(gray, where="test")
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 1], gray)
    bgra = np.dstack([gray, gray + 1, gray + 2, np.full_like(gray, 255)])
    assert np.array_equal(as_bgr(bgra, where="test"), bgra[..., :3])
    for bad in (np.zeros((3, 4, 3), np.float32), np.zeros((3, 4, 2), np.uint8)):
        with pytest.raises(SourceError):
            as_bgr(bad, where="test")
