"""The MQTT disk spool: order, the bound, and rows that outlive the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.core.errors import ConfigError
from edge.runtime.spool import Spool


def msg(i: int) -> tuple[str, bytes, int, bool]:
    return ("t/result", f"m{i}".encode(), 1, i % 2 == 0)


def test_spool_keeps_order_and_bound_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s" / "spool.sqlite"
    s = Spool(path, max_messages=5)
    assert s.push([msg(i) for i in range(3)]) == 0
    assert s.push([msg(i) for i in range(3, 8)]) == 3  # only 2 fit: 3 dropped
    assert len(s) == 5
    rows = s.peek(2)
    assert [m for _, m in rows] == [msg(0), msg(1)]
    s.pop(rows[-1][0])
    assert len(s) == 3
    s.close()
    again = Spool(path, max_messages=5)
    assert len(again) == 3
    assert [m for _, m in again.peek(10)] == [msg(2), msg(3), msg(4)]
    again.close()


def test_spool_in_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--mqtt-spool"):
        Spool(blocker / "spool.sqlite", 10)
