"""Which task heads run on which frame.

Each task has one rule:

- ``every`` — every processed frame (the default);
- ``every N`` — every N-th processed frame (the 1st, the N+1-th, ...);
- ``when COND`` — only on frames where another task's decoded result meets COND;
- ``every N when COND`` — both;
- ``off`` — never.

A condition compares a field of another task's result (:mod:`edge.runtime.decode`)::

    defect != ok              the task's primary field: label / on / value / fraction
    defect in [scratch, hole]
    defect.prob > 0.8         any field, by dotted path: probs.scratch, fractions.defect
    attrs contains rusty      multilabel: a label is on
    mask > 0.01               segmentation: share of non-background pixels

The condition's task runs first (rules are ordered by their dependencies; cycles are refused);
a condition on a task that did not run on that frame is false.

Rules come from CLI flags (:func:`build_schedule`: ``tasks=["defect", "mask"]``,
``every=["mask=5"]``, ``when=["mask: defect != ok"]``) or a file (:func:`read_schedule_file`):
JSON ``{"mask": "when defect != ok", "angle": {"every": 5}}`` or plain text, one
``task: rule`` per line (``#`` comments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.core.errors import ScheduleError, quote
from edge.runtime.decode import FIELDS, PRIMARY_FIELD, Decoder, TaskResult

RULE_FORMS = "'every', 'every N', 'when COND', 'every N when COND' or 'off'"
LABEL_OPS = ("==", "!=", "in", "not in")
NUMBER_OPS = ("==", "!=", "<", "<=", ">", ">=")
LIST_OPS = ("contains", "not contains")
_TOKEN = re.compile(
    r"""\s*(?:(?P<op>==|!=|<=|>=|<|>|=)|(?P<br>[\[\],])|"(?P<dq>[^"]*)"|"""
    r"""'(?P<sq>[^']*)'|(?P<word>[^\s\[\],=!<>"']+))"""
)


@dataclass(frozen=True)
class Condition:
    """``task[.path] op value``, checked against that task's :class:`TaskResult`."""

    text: str
    task: str
    path: str
    op: str
    value: Any

    def holds(self, results: Mapping[str, TaskResult | None]) -> bool:
        r = results.get(self.task)
        if r is None or r.error is not None:
            return False  # not run, or no result (non-finite output): the condition is unknown
        got = r.get(self.path)
        op, want = self.op, self.value
        if op in ("in", "not in"):
            return (got in want) == (op == "in")
        if op in LIST_OPS:
            return (want in got) == (op == "contains")
        if op == "==":
            return bool(got == want)
        if op == "!=":
            return bool(got != want)
        return bool({"<": got < want, "<=": got <= want, ">": got > want, ">=": got >= want}[op])


@dataclass(frozen=True)
class TaskRule:
    """One task's rule: ``period`` 0 means off, else every ``period``-th frame, if ``when``."""

    task: str
    period: int = 1
    when: Condition | None = None

    @property
    def off(self) -> bool:
        return self.period == 0

    def due(self, index: int, results: Mapping[str, TaskResult | None]) -> bool:
        if self.period == 0 or index % self.period:
            return False
        return self.when is None or self.when.holds(results)

    def describe(self) -> str:
        if self.off:
            return "off"
        text = "every" if self.period == 1 else f"every {self.period}"
        if self.when is not None:
            text = f"when {self.when.text}" if self.period == 1 else f"{text} when {self.when.text}"
        return text


@dataclass(frozen=True)
class Schedule:
    """Every task's rule, in run order (a condition's task before the task it gates)."""

    rules: tuple[TaskRule, ...]

    @property
    def order(self) -> tuple[str, ...]:
        """The tasks that may run, in run order."""
        return tuple(r.task for r in self.rules if not r.off)

    def rule(self, task: str) -> TaskRule:
        for r in self.rules:
            if r.task == task:
                return r
        raise ScheduleError(f"no rule for task '{task}'; tasks: {[r.task for r in self.rules]}")

    def describe(self) -> dict[str, str]:
        return {r.task: r.describe() for r in self.rules}

    @classmethod
    def every_frame(cls, tasks: Iterable[str]) -> Schedule:
        return cls(tuple(TaskRule(t) for t in tasks))


# -- parsing ----------------------------------------------------------------------------------
def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ScheduleError(
                f"{where}: cannot read {quote(text[pos:])} in condition {quote(text)}"
            )
        kind = m.lastgroup or ""
        value = m.group(kind)
        out.append(("str" if kind in ("dq", "sq") else kind, value))
        pos = m.end()
    return out


def parse_condition(text: str, decoders: Mapping[str, Decoder], where: str) -> Condition:
    """Parse and check one condition against the tasks' decode types and labels."""
    toks = _tokens(text, where)
    words = [v for _, v in toks]
    if len(toks) < 3 or toks[0][0] != "word":
        raise ScheduleError(
            f"{where}: condition {quote(text)} must read 'TASK[.FIELD] OP VALUE', "
            "e.g. 'defect != ok' or 'defect.prob > 0.8'"
        )
    ref, *rest = words[0].split(".")
    path = ".".join(rest)
    if len(toks) >= 4 and words[1] == "not" and words[2] in ("in", "contains"):
        op, vals = f"not {words[2]}", toks[3:]
    elif words[1] in ("in", "contains") or toks[1][0] == "op":
        op, vals = ("==" if words[1] == "=" else words[1]), toks[2:]
    else:
        raise ScheduleError(
            f"{where}: condition {quote(text)}: unknown operator {words[1]!r}; use "
            f"one of {sorted(set(NUMBER_OPS + LABEL_OPS + LIST_OPS))}"
        )
    if ref not in decoders:
        raise ScheduleError(
            f"{where}: condition {quote(text)} reads task '{ref}', which this model "
            f"does not have; tasks: {sorted(decoders)}"
        )
    value = _check_field(decoders[ref], path, op, _value(vals, text, where), text, where)
    return Condition(text.strip(), ref, path, op, value)


def _value(vals: list[tuple[str, str]], text: str, where: str) -> str | tuple[str, ...]:
    if len(vals) == 1 and vals[0][0] in ("word", "str"):
        return vals[0][1]
    if len(vals) >= 2 and vals[0] == ("br", "[") and vals[-1] == ("br", "]"):
        inner = vals[1:-1]
        if all(t == ("br", ",") for t in inner[1::2]) and all(
            t[0] in ("word", "str") for t in inner[::2]
        ):
            return tuple(t[1] for t in inner[::2])
    raise ScheduleError(
        f"{where}: condition {quote(text)}: the value must be one word, number, "
        "quoted text or a [list, of, them]"
    )


def _fields(dec: Decoder) -> list[str]:
    if dec.type == "affine":
        return ["value"] if len(dec.labels) == 1 else ["values"]
    return [f for f in FIELDS[dec.type] if f != "shape"]


def _check_field(
    dec: Decoder, path: str, op: str, value: str | tuple[str, ...], text: str, where: str
) -> Any:
    """Check that ``path op value`` makes sense for this task; returns the typed value."""
    allowed = _fields(dec)
    default = allowed[0] if dec.type == "affine" else PRIMARY_FIELD[dec.type]
    head, _, sub = (path or default).partition(".")
    keyed = {"probs", "fractions", "values"}
    if head not in allowed or (head in keyed) != bool(sub):
        raise ScheduleError(
            f"{where}: condition {quote(text)}: task '{dec.task}' ({dec.type}) has no field "
            f"'{path or head}'; fields: {allowed} (probs/fractions/values need a .label)"
        )
    labels = dec.labels[1:] if head == "fractions" else dec.labels
    if sub and sub not in labels:
        raise ScheduleError(
            f"{where}: condition {quote(text)}: '{sub}' is not a label of task "
            f"'{dec.task}'; labels: {list(labels)}"
        )
    ok_ops = LABEL_OPS if head == "label" else LIST_OPS if head == "on" else NUMBER_OPS
    if op not in ok_ops:
        raise ScheduleError(
            f"{where}: condition {quote(text)}: field '{path or head}' of "
            f"'{dec.task}' allows operators {list(ok_ops)}, not '{op}'"
        )
    if (op in ("in", "not in")) != isinstance(value, tuple):
        raise ScheduleError(
            f"{where}: condition {quote(text)}: 'in' takes a [list], the other operators one value"
        )
    if head in ("label", "on"):
        bad = [v for v in (value if isinstance(value, tuple) else (value,)) if v not in dec.labels]
        if bad:
            raise ScheduleError(
                f"{where}: condition {quote(text)}: {bad} not among the labels of "
                f"'{dec.task}': {list(dec.labels)}"
            )
        return value
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        raise ScheduleError(
            f"{where}: condition {quote(text)}: '{path or head}' is a number; "
            f"compare it with a number, not {quote(value)}"
        ) from None


def parse_rule(
    task: str,
    text: str | Mapping[str, Any],
    decoders: Mapping[str, Decoder],
    where: str = "schedule",
) -> TaskRule:
    """One rule from text (see module doc) or a JSON object ``{"every": N, "when": COND}``."""
    if task not in decoders:
        raise ScheduleError(
            f"{where}: unknown task '{task}'; this model's tasks are {sorted(decoders)}"
        )
    if isinstance(text, Mapping):
        bad = set(text) - {"every", "when", "off"}
        if bad:
            raise ScheduleError(
                f"{where}: rule for '{task}' has unknown keys {sorted(bad)}; "
                "allowed: every, when, off"
            )
        every, when = text.get("every", 1), text.get("when")
        if text.get("off") or not isinstance(every, int) or isinstance(every, bool):
            if text.get("off"):
                return TaskRule(task, 0)
            raise ScheduleError(f"{where}: '{task}': every must be an integer >= 1")
        text = f"every {every}" + (f" when {when}" if when else "")
    t = str(text).strip()
    m = re.fullmatch(
        r"(?:(?:every|always|on)(?:[\s:]+(\d+))?)?\s*(?:when\s+(.+))?", t, flags=re.I | re.S
    )
    if t.lower() in ("off", "never"):
        return TaskRule(task, 0)
    if not t or m is None or (m.group(1) is not None and int(m.group(1)) < 1):
        raise ScheduleError(
            f"{where}: rule {quote(t)} for task '{task}' is not valid; expected "
            f"{RULE_FORMS} (N >= 1)"
        )
    period = int(m.group(1) or 1)
    when = parse_condition(m.group(2), decoders, f"{where}: '{task}'") if m.group(2) else None
    if when is not None and when.task == task:
        raise ScheduleError(f"{where}: '{task}: {t}': a task's condition cannot read itself")
    return TaskRule(task, period, when)


MAX_SCHEDULE_BYTES = 64 * 1024
"""A schedule is a few lines; a bigger file is the wrong file (and is not read into memory)."""


def read_schedule_file(path: str | Path) -> dict[str, Any]:
    """{task: rule} from a JSON object or a ``task: rule`` text file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_SCHEDULE_BYTES:
            raise ScheduleError(
                f"schedule file '{p}' is {size} bytes; a schedule is a few 'task: rule' lines "
                f"(at most {MAX_SCHEDULE_BYTES} bytes): is it the right file?"
            )
        data_bytes = p.read_bytes()
    except OSError as e:
        raise ScheduleError(f"schedule file '{p}' cannot be read: {e}") from e
    try:
        if b"\0" in data_bytes:
            raise UnicodeError("it holds NUL bytes")
        text = data_bytes.decode("utf-8")
    except UnicodeError as e:
        raise ScheduleError(
            f"schedule file '{p}' is not a text file ({e}); expected 'task: rule' lines or JSON"
        ) from e
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScheduleError(f"schedule file '{p}' is not valid JSON: {e}") from e
        if not isinstance(data, dict) or not all(isinstance(v, (str, dict)) for v in data.values()):
            raise ScheduleError(
                f"schedule file '{p}': each value must be a rule string or "
                'an object {"every": N, "when": COND}'
            )
        return dict(data)
    rules: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        task, sep, rule = line.partition(":")
        if not sep or not task.strip().isidentifier():
            raise ScheduleError(f"{p}:{n}: expected 'task: rule' ({RULE_FORMS}), got {quote(line)}")
        if task.strip() in rules:
            raise ScheduleError(f"{p}:{n}: a second rule for '{task.strip()}'")
        rules[task.strip()] = rule.strip()
    return rules


def _flag_pairs(items: Sequence[str], sep: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        task, ok, value = item.partition(sep)
        if not ok or not task.strip() or not value.strip():
            example = "mask=5" if flag == "--every" else "mask: defect != ok"
            raise ScheduleError(f"{flag} {quote(item)}: expected 'TASK{sep}...' like '{example}'")
        out.append((task.strip(), value.strip()))
    return out


def build_schedule(
    decoders: Mapping[str, Decoder],
    *,
    tasks: Sequence[str] | None = None,
    rules: Mapping[str, Any] | None = None,
    every: Sequence[str] = (),
    when: Sequence[str] = (),
) -> Schedule:
    """The schedule from CLI-style inputs.

    ``tasks``: the tasks to run (others off; default all); ``rules``: {task: rule} (e.g. from
    :func:`read_schedule_file`); ``every``: ``"task=N"``; ``when``: ``"task: COND"``. Flags
    override the file's rule for that task; ``tasks`` restricts everything.
    """
    names = list(decoders)
    if tasks is not None:
        unknown = [t for t in tasks if t not in decoders]
        if unknown or not tasks:
            raise ScheduleError(
                f"--tasks {','.join(tasks)}: unknown task(s) {unknown}; this "
                f"model's tasks are {names}"
            )
    active = set(names if tasks is None else tasks)
    built = {
        t: parse_rule(t, (rules or {}).get(t, "every"), decoders, "schedule file") for t in names
    }
    for t in rules or {}:
        if t not in decoders:
            parse_rule(t, "every", decoders, "schedule file")  # raises: unknown task
    for flag, pairs in (
        ("--every", _flag_pairs(every, "=", "--every")),
        ("--when", _flag_pairs(when, ":", "--when")),
    ):
        for t, value in pairs:
            if t not in active:
                raise ScheduleError(
                    f"{flag} names task '{t}', which is not run (tasks: "
                    f"{sorted(active)}); add it to --tasks"
                )
            old = built[t]
            if flag == "--every":
                if not value.isdigit() or int(value) < 1:
                    raise ScheduleError(f"--every {t}={value}: N must be an integer >= 1")
                built[t] = TaskRule(t, int(value), old.when)
            else:
                cond = parse_rule(t, f"when {value}", decoders, "--when").when
                built[t] = TaskRule(t, old.period or 1, cond)
    final = {t: (r if t in active else TaskRule(t, 0)) for t, r in built.items()}
    return Schedule(_dependency_order(final, names))


def _dependency_order(rules: Mapping[str, TaskRule], names: list[str]) -> tuple[TaskRule, ...]:
    for r in rules.values():
        if not r.off and r.when is not None and rules[r.when.task].off:
            raise ScheduleError(
                f"'{r.task}: {r.describe()}' reads task '{r.when.task}', which is off; run "
                f"'{r.when.task}' too (add it to --tasks) or drop the condition"
            )
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(t: str, path: list[str]) -> None:
        if state.get(t) == 2:
            return
        if state.get(t) == 1:
            cycle = " -> ".join([*path[path.index(t) :], t])
            raise ScheduleError(
                f"the conditions form a cycle ({cycle}); a task cannot wait "
                "for a result that waits for it"
            )
        state[t] = 1
        cond = rules[t].when
        if cond is not None and not rules[t].off:
            visit(cond.task, [*path, t])
        state[t] = 2
        order.append(t)

    for t in names:
        visit(t, [])
    return tuple(rules[t] for t in order)
