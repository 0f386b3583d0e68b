"""Dispatch schedules: rule parsing, conditions, flags and files, validation, ordering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.core.errors import ScheduleError
from edge.runtime.decode import Decoder, TaskResult
from edge.runtime.schedule import (
    Schedule,
    build_schedule,
    parse_condition,
    parse_rule,
    read_schedule_file,
)

DEC = {
    "defect": Decoder("defect", {"type": "softmax_argmax", "labels": ["ok", "scratch", "hole"]}),
    "part": Decoder("part", {"type": "softmax_argmax", "labels": ["plate", "disc", "bracket"]}),
    "attrs": Decoder("attrs", {"type": "sigmoid_threshold", "labels": ["shiny", "rusty"]}),
    "mask": Decoder("mask", {"type": "argmax_mask", "labels": ["background", "defect"]}),
    "angle": Decoder("angle", {"type": "affine", "names": ["angle"], "scale": 30.0, "unit": "deg"}),
}


def cls(task: str, index: int, n: int = 3) -> TaskResult:
    logits = np.zeros(n, np.float32)
    logits[index] = 2.0
    return DEC[task].decode(logits)


def test_condition_forms_evaluate_on_results() -> None:
    scratch, ok = cls("defect", 1), cls("defect", 0)
    mask = DEC["mask"].decode(np.stack([np.zeros((2, 2)), np.eye(2)]).astype(np.float32))
    attrs = DEC["attrs"].decode(np.array([-3.0, 3.0], np.float32))
    angle = DEC["angle"].decode(np.array([0.5], np.float32))
    cases = [
        ("defect != ok", {"defect": scratch}, True),
        ("defect != ok", {"defect": ok}, False),
        ("defect == 'ok'", {"defect": ok}, True),
        ("defect = ok", {"defect": ok}, True),
        ("defect in [scratch, hole]", {"defect": scratch}, True),
        ("defect not in [scratch,hole]", {"defect": scratch}, False),
        ("defect.prob > 0.8", {"defect": scratch}, False),  # softmax(2,0,0)[0] = 0.787
        ("defect.prob >= 0.78", {"defect": scratch}, True),
        ("defect.probs.ok < 0.2", {"defect": scratch}, True),
        ("attrs contains rusty", {"attrs": attrs}, True),
        ("attrs not contains rusty", {"attrs": attrs}, False),
        ("mask > 0.4", {"mask": mask}, True),  # 2 of 4 pixels
        ("mask.fractions.defect <= 0.4", {"mask": mask}, False),
        ("angle >= 15", {"angle": angle}, True),
        ("angle < -5", {"angle": angle}, False),
        ("defect != ok", {"defect": None}, False),  # did not run: never true
    ]
    for text, results, want in cases:
        assert parse_condition(text, DEC, "t").holds(results) is want, text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("defect != okay", ["'okay'", "labels of 'defect'", "'ok'"]),
        ("defect > ok", ["allows operators", "'>'"]),
        ("defect.prob > high", ["number", "'high'"]),
        ("defect.probs.rust > 0.5", ["'rust' is not a label"]),
        ("defect.probs > 0.5", ["need a .label"]),
        ("defect.colour == red", ["no field 'colour'", "fields"]),
        ("color != ok", ["task 'color'", "does not have"]),
        ("defect in scratch", ["[list]"]),
        ("defect ~ ok", ["unknown operator"]),
        ("defect !=", ["must read"]),
        ("attrs contains green", ["'green'", "labels"]),
        ("mask.fractions.background > 0.1", ["'background' is not a label"]),
        ("defect in [scratch hole]", ["[list, of, them]"]),
    ],
)
def test_bad_conditions_say_what_is_allowed(text: str, words: list[str]) -> None:
    with pytest.raises(ScheduleError) as e:
        parse_condition(text, DEC, "--when")
    for w in words:
        assert w in str(e.value), str(e.value)


def test_rule_forms_and_due() -> None:
    assert parse_rule("mask", "every", DEC).describe() == "every"
    r5 = parse_rule("mask", "every 5", DEC)
    assert r5.period == 5 and [i for i in range(12) if r5.due(i, {})] == [0, 5, 10]
    assert parse_rule("mask", "every:3", DEC).period == 3
    assert parse_rule("mask", "off", DEC).off and not parse_rule("mask", "off", DEC).due(0, {})
    both = parse_rule("mask", "every 2 when defect != ok", DEC)
    assert both.describe() == "every 2 when defect != ok"
    scratch = {"defect": cls("defect", 1)}
    assert [i for i in range(4) if both.due(i, scratch)] == [0, 2]
    assert not both.due(0, {"defect": cls("defect", 0)})
    obj = parse_rule("mask", {"every": 4, "when": "defect != ok"}, DEC)
    assert (obj.period, obj.when and obj.when.text) == (4, "defect != ok")
    for bad in ("every 0", "sometimes", "every -2", "", "every x"):
        with pytest.raises(ScheduleError, match="every N"):
            parse_rule("mask", bad, DEC)
    with pytest.raises(ScheduleError, match="cannot read itself"):
        parse_rule("defect", "when defect != ok", DEC)
    with pytest.raises(ScheduleError, match="unknown task 'blob'"):
        parse_rule("blob", "every", DEC)


def test_flags_build_an_ordered_schedule() -> None:
    s = build_schedule(
        DEC, tasks=["mask", "defect", "angle"], every=["angle=5"], when=["mask: defect != ok"]
    )
    assert s.order == ("defect", "mask", "angle")  # the condition's task runs first
    assert s.describe() == {
        "defect": "every",
        "mask": "when defect != ok",
        "part": "off",
        "attrs": "off",
        "angle": "every 5",
    }
    assert build_schedule(DEC).order == tuple(DEC)
    assert Schedule.every_frame(DEC).describe() == dict.fromkeys(DEC, "every")


def test_flag_errors() -> None:
    with pytest.raises(ScheduleError, match=r"unknown task\(s\) \['dfect'\]"):
        build_schedule(DEC, tasks=["dfect"])
    with pytest.raises(ScheduleError, match=r"'mask'.*add it to --tasks"):
        build_schedule(DEC, tasks=["defect"], every=["mask=5"])
    with pytest.raises(ScheduleError, match="reads task 'defect', which is off"):
        build_schedule(DEC, tasks=["mask"], when=["mask: defect != ok"])
    with pytest.raises(ScheduleError, match=r"TASK=\.\.\."):
        build_schedule(DEC, every=["mask"])
    with pytest.raises(ScheduleError, match="integer >= 1"):
        build_schedule(DEC, every=["mask=0"])
    with pytest.raises(ScheduleError, match="TASK:"):
        build_schedule(DEC, when=["defect != ok"])


def test_cycles_are_refused() -> None:
    rules = {"mask": "when defect != ok", "defect": "when part == disc", "part": "when mask > 0.1"}
    with pytest.raises(ScheduleError, match="cycle") as e:
        build_schedule(DEC, rules=rules)
    assert "defect -> part -> mask -> defect" in str(e.value)


def test_schedule_files_text_and_json(tmp_path: Path) -> None:
    text = tmp_path / "rules.txt"
    text.write_text(
        "# line 7\nmask: when defect != ok   # only defective parts\nangle: every 10\n\npart: off\n"
    )
    rules = read_schedule_file(text)
    assert rules == {"mask": "when defect != ok", "angle": "every 10", "part": "off"}
    s = build_schedule(DEC, rules=rules, every=["angle=2"])
    assert s.describe()["angle"] == "every 2" and s.rule("part").off
    js = tmp_path / "rules.json"
    js.write_text('{"mask": {"every": 3, "when": "defect.prob > 0.5"}, "attrs": "off"}')
    s2 = build_schedule(DEC, rules=read_schedule_file(js))
    assert s2.describe()["mask"] == "every 3 when defect.prob > 0.5"
    bad = tmp_path / "bad.txt"
    bad.write_text("mask when defect != ok\n")
    with pytest.raises(ScheduleError, match=r"bad.txt:1: expected 'task: rule'"):
        read_schedule_file(bad)
    twice = tmp_path / "twice.txt"
    twice.write_text("mask: off\nmask: every\n")
    with pytest.raises(ScheduleError, match="second rule for 'mask'"):
        read_schedule_file(twice)
    with pytest.raises(ScheduleError, match="unknown task 'blob'"):
        build_schedule(DEC, rules={"blob": "every"})
    broken = tmp_path / "broken.json"
    broken.write_text('{"mask": ')
    with pytest.raises(ScheduleError, match="not valid JSON"):
        read_schedule_file(broken)
    with pytest.raises(ScheduleError, match="cannot be read"):
        read_schedule_file(tmp_path / "missing.txt")
