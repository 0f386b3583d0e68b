"""`edge run`'s line-output flags become one LineOutputsConfig (None without outputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import _line_config, build_parser
from edge.core.errors import ConfigError
from edge.runtime.line import LineOutputsConfig


def test_line_flags_to_config() -> None:
    p = build_parser()
    base = ["run", "bundle", "--source", "synthetic:"]
    assert _line_config(p.parse_args(base)) is None
    with pytest.raises(ConfigError, match="--reject"):
        _line_config(p.parse_args([*base, "--reject", "defect != ok"]))
    flags = "--mqtt mqtts://u:p@h:8883/f/l1 --mqtt-ca ca.pem --station st3 --camera cam1"
    flags += " --opcua opc.tcp://0.0.0.0:4840 --opcua-user plc:pw --metrics 0.0.0.0:9108"
    flags += " --stall-seconds 2 --mqtt-spool /tmp/sp --mqtt-spool-max 7"
    args = p.parse_args([*base, *flags.split(), "--reject", "defect != ok"])
    assert _line_config(args) == LineOutputsConfig(
        station="st3",
        camera="cam1",
        reject="defect != ok",
        mqtt="mqtts://u:p@h:8883/f/l1",
        mqtt_ca=Path("ca.pem"),
        spool=Path("/tmp/sp"),
        spool_max=7,
        opcua="opc.tcp://0.0.0.0:4840",
        opcua_user="plc:pw",
        metrics="0.0.0.0:9108",
        stall_s=2.0,
    )
