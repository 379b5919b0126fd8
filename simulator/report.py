"""The report of a run: JSON, a terminal table, the event log (JSONL) and an HTML chart.

Breakdowns: per service, per group, per hour and in total. ``hours`` has one row per local hour
of each day of the run, keyed "YYYY-MM-DD HH" (the keys sort in time order); ``hours_of_day``
pools the same hour of every day, keyed "HH", so its counts are the sums of ``hours``' rows.
A conversation belongs to the hour its visitor arrived in.

Definitions:

* offered: visitors who sent ``start``; out_of_hours: those told the service was closed;
* answered / abandoned: assigned to an operator / sent ``end`` while waiting;
* service level: :func:`omni.domain.reports.service_level` (answered within T seconds /
  (answered + abandoned): those waiting at the end count in neither), in %;
* asa / p90_wait: mean and 90th percentile wait of answered conversations (s);
* aht: mean time from assignment to the operator's ``end`` (s);
* occupancy (groups and hours): busy operator-seconds / logged-in operator-seconds, where busy
  means holding at least one conversation; an operator counts in each of their groups;
* longest_queue: most conversations waiting at once; for an hour, across all groups and
  counting those already waiting when the hour began (pooled: the highest of its days').

``estimates`` (per group and in total) sets the estimated wait each visitor was told when they
joined the queue (their first ``queued`` frame) against the wait they had until an operator took
them — answered visitors only, as an abandoned visitor's wait is not known: quoted / unknown
(told an estimate / told null), mae and bias (mean absolute and mean signed error, s),
median_relative_error, within_50_percent and within_1_minute (%), where a relative error is
|estimate - wait| / wait, a wait under a second counting as one second; ``waited`` repeats them
for the visitors who waited at least a second (the others, answered at once, were mostly told 0).

``bot`` (per service with a chatbot, and in total when any has one) counts the conversations
that met the bot: ``conversations``; ``contained`` (finished by the bot) and ``containment``
(contained / conversations, in %); ``handoffs`` per group (to a queue, at a hand-off node or
when the visitor asked for a person); ``dropoffs`` per question where the visitor left or fell
silent; ``out_of_hours`` (the bot found nothing open); ``in_bot_at_end``. These five outcomes
add up to ``conversations``. The ``offered`` of the other figures counts every visitor, those
the bot kept too; a visitor handed off waits from the hand-off (``asa``, service level). A
service's ``nodes`` is the per-node table of its bot, in the script's order (conditions, which
a visitor never sees, left out): ``visits`` (for a message or an end: times said; for a menu or
an ask: times asked, a retry or a return after a closed group counting again; for a hand-off:
times reached), ``answers`` given there and ``invalid`` ones (asks: the answer did not fit, by
the server's own check), ``dropoffs``, and for a hand-off its ``handoffs``, ``closed`` (its
group's schedule kept it closed, and the visitor went back to the question) and
``out_of_hours``; the ``@person`` row counts the visitors who asked for a person. At every
question, visits = answers + dropoffs + those still there at the end.
"""

from __future__ import annotations

import bisect
import html
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from omni.domain.bot import PERSON, AskNode, Bot, ConditionNode, EndNode, HandoffNode, MenuNode
from omni.domain.reports import service_level
from simulator.engine import Trace
from simulator.scenario import Scenario

BUCKET = 900.0  # chart resolution, seconds


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def build_report(scenario: Scenario, trace: Trace, seed: int, threshold: float) -> dict[str, Any]:
    end = scenario.duration
    if trace.mode != "virtual":  # a real-time run may have been cut short by its wall-clock cap
        end = min(end, max((e.t for e in trace.events if e.kind == "end"), default=end))
    convs: dict[int, dict[str, Any]] = {}
    by_id: dict[str, dict[str, Any]] = {}
    queue_changes: list[tuple[float, int, str | None, int | None]] = []  # t, delta, service, group
    logged: dict[int, list[list[float]]] = defaultdict(list)
    busy: dict[int, list[list[float]]] = defaultdict(list)
    available: dict[int, list[list[float]]] = defaultdict(list)
    op_groups: dict[int, list[int]] = {}
    for e in trace.events:
        d = e.data
        if e.kind == "start":
            convs[d["visitor"]] = {"t": e.t, "service": d["service"], "status": "waiting_at_end"}
            continue
        if "visitor" in d:
            c = convs[d["visitor"]]
            if "id" in d:
                by_id[d["id"]] = c
            if e.kind == "out_of_hours":
                c["status"] = "out_of_hours"
                if "handoff" in d:  # the bot found nothing open
                    c["bot_outcome"], c["handoff"] = "out_of_hours", d["handoff"]
            elif e.kind == "queued":
                c["group"] = d["group"]
                c["status"] = "waiting_at_end"
                if "handoff" in d:  # the bot handed the visitor to this group
                    c["bot_outcome"], c["handoff"] = "handoff", d["handoff"]
                    c["handoff_group"] = d["group"]
                if "estimate" in d:
                    c["estimate"] = d["estimate"]
                queue_changes.append((e.t, 1, c["service"], d["group"]))
            elif e.kind == "requeued":
                queue_changes.append((e.t, 1, c["service"], d["group"]))
                c["requeued"] = c.get("requeued", 0) + 1
            elif e.kind == "assigned":
                queue_changes.append((e.t, -1, c["service"], c.get("queue_group", c.get("group"))))
                if "wait" not in c:
                    c["wait"] = d["wait"]
                    c["status"] = "answered"
                    c["group"] = d["group"]
                c["assigned_t"] = e.t
            elif e.kind == "abandoned":
                queue_changes.append((e.t, -1, c["service"], c.get("group")))
                c["status"] = "abandoned"
                c["wait"] = d["wait"]
            elif e.kind == "bot_start":
                c["bot"], c["status"], c["bot_outcome"] = d["bot"], "in_bot", "in_bot"
                c["bot_steps"] = []
            elif e.kind in ("bot", "bot_reply", "group_closed"):
                c["bot_steps"].append((e.kind, d["node"], d))
            elif e.kind == "bot_ended":
                c["status"] = c["bot_outcome"] = "contained"
            elif e.kind == "bot_dropped":
                c["status"], c["bot_outcome"], c["dropped_at"] = "bot_dropped", "dropped", d["node"]
            if e.kind == "requeued":
                c["queue_group"] = d["group"]
        elif e.kind == "ended":
            ended = by_id.get(d["id"])
            if ended is not None and "assigned_t" in ended:
                ended["handle"] = ended.get("handle", 0.0) + e.t - ended["assigned_t"]
        elif e.kind == "login":
            op_groups[d["operator"]] = d["groups"]
            logged[d["operator"]].append([e.t, end])
        elif e.kind == "logout":
            logged[d["operator"]][-1][1] = e.t
            if available[d["operator"]] and available[d["operator"]][-1][1] == end:
                available[d["operator"]][-1][1] = e.t
        elif e.kind == "available":
            available[d["operator"]].append([e.t, end])
        elif e.kind == "paused":
            if available[d["operator"]] and available[d["operator"]][-1][1] == end:
                available[d["operator"]][-1][1] = e.t
        elif e.kind == "busy":
            spans = busy[d["operator"]]
            if not spans or spans[-1][1] != end:
                spans.append([e.t, end])
        elif e.kind == "idle" and busy[d["operator"]]:
            busy[d["operator"]][-1][1] = e.t
    # A logged-out (dropped) operator is neither busy nor logged in afterwards.
    for op, spans in busy.items():
        out = logged[op][-1][1] if logged[op] else end
        for span in spans:
            span[1] = min(span[1], out)

    def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
        answered = [c for c in rows if c["status"] == "answered"]
        abandoned = [c for c in rows if c["status"] == "abandoned"]
        waits = [c["wait"] for c in answered]
        handles = [c["handle"] for c in answered if "handle" in c]
        within = sum(1 for w in waits if w <= threshold)
        level = service_level(within, len(answered), len(abandoned))
        return {
            "offered": len(rows),
            "answered": len(answered),
            "abandoned": len(abandoned),
            "out_of_hours": sum(1 for c in rows if c["status"] == "out_of_hours"),
            "waiting_at_end": sum(1 for c in rows if c["status"] == "waiting_at_end"),
            "service_level": _r(None if level is None else 100.0 * level, 1),
            "asa": _r(sum(waits) / len(waits) if waits else None),
            "p90_wait": _r(_p90(waits)),
            "aht": _r(sum(handles) / len(handles) if handles else None),
        }

    def longest(select: Any) -> int:
        level = best = 0
        for t, delta, service, group in sorted(queue_changes, key=lambda q: (q[0], -q[1])):
            if select(t, service, group):
                level += delta
                best = max(best, level)
        return best

    def occupancy(ops: list[int], lo: float, hi: float) -> float | None:
        on = sum(_overlap(a, b, lo, hi) for op in ops for a, b in logged[op])
        work = sum(_overlap(a, b, lo, hi) for op in ops for a, b in busy[op])
        return _r(100.0 * work / on if on else None, 1)

    all_convs = [convs[k] for k in sorted(convs)]
    estimates = {
        "total": _estimates(all_convs),
        "groups": {
            str(gid): {
                "name": scenario.group_names[gid],
                **_estimates([c for c in all_convs if c.get("group") == gid]),
            }
            for gid in sorted(scenario.group_names)
        },
    }
    services = {}
    directory = scenario.config.directory
    for sid in sorted(scenario.service_names):
        rows = [c for c in all_convs if c["service"] == sid]
        services[str(sid)] = {
            "name": scenario.service_names[sid],
            **stats(rows),
            "longest_queue": longest(lambda t, s, g, sid=sid: s == sid),
        }
        service = directory.services[sid]
        if service.bot is not None:
            bot = scenario.bot_plans[service.bot].bot
            services[str(sid)]["bot"] = {
                "bot": bot.id,
                **bot_figures(rows),
                "nodes": bot_nodes(rows, bot, service.bot_person),
            }
    groups = {}
    for gid in sorted(scenario.group_names):
        rows = [c for c in all_convs if c.get("group") == gid]
        members = sorted(op for op, gs in op_groups.items() if gid in gs)
        groups[str(gid)] = {
            "name": scenario.group_names[gid],
            **stats(rows),
            "occupancy": occupancy(members, 0, end),
            "longest_queue": longest(lambda t, s, g, gid=gid: g == gid),
        }
    everyone = sorted(logged)

    def staffing(spans: list[tuple[float, float]]) -> tuple[float, float]:
        """Logged-in and busy operator-seconds within ``spans``."""
        on = sum(
            _overlap(a, b, lo, hi) for op in everyone for a, b in logged[op] for lo, hi in spans
        )
        work = sum(
            _overlap(a, b, lo, hi) for op in everyone for a, b in busy[op] for lo, hi in spans
        )
        return on, work

    # Hours: each local hour of each day on its own ("2026-11-23 09"), then the same hours
    # pooled across days ("09"). A conversation belongs to the hour its visitor arrived in.
    windows = _hour_windows(scenario, end)
    starts = [lo for lo, _ in windows]
    arrived_in: list[list[dict[str, Any]]] = [[] for _ in windows]
    for c in all_convs:
        arrived_in[max(0, bisect.bisect_right(starts, c["t"]) - 1)].append(c)
    window_peaks = _queue_peaks(queue_changes, windows)
    labels: list[str] = []
    for lo in starts:
        label = scenario.local(lo).strftime("%Y-%m-%d %H")
        # The hour the clocks go back over happens twice: the second one is labelled so.
        labels.append(label if label not in labels else f"{label} (clocks back)")
    hour_of_day = [f"{scenario.local(lo).hour:02d}" for lo in starts]
    hours = {}
    for label, window, rows, peak in zip(labels, windows, arrived_in, window_peaks, strict=True):
        on, work = staffing([window])
        hours[label] = {
            **stats(rows),
            "occupancy": _r(100.0 * work / on if on else None, 1),
            "longest_queue": peak,
            "staffed_operator_hours": _r(on / 3600),
        }
    hours_of_day = {}
    for hh in sorted(set(hour_of_day)):
        mine = [i for i, of_day in enumerate(hour_of_day) if of_day == hh]
        on, work = staffing([windows[i] for i in mine])
        hours_of_day[hh] = {
            **stats([c for i in mine for c in arrived_in[i]]),
            "occupancy": _r(100.0 * work / on if on else None, 1),
            "longest_queue": max(window_peaks[i] for i in mine),
            "staffed_operator_hours": _r(on / 3600),
        }
    # Chart series.
    series = []
    buckets = [(b * BUCKET, min(end, (b + 1) * BUCKET)) for b in range(math.ceil(end / BUCKET))]
    in_bucket: list[list[dict[str, Any]]] = [[] for _ in buckets]
    for c in all_convs:
        if (b := int(c["t"] // BUCKET)) < len(buckets):
            in_bucket[b].append(c)
    for (lo, hi), rows, peak in zip(
        buckets, in_bucket, _queue_peaks(queue_changes, buckets), strict=True
    ):
        st = stats(rows)
        mid = (lo + hi) / 2
        series.append(
            {
                "t": lo,
                "local": scenario.local(lo).strftime("%Y-%m-%d %H:%M"),
                "queue": peak,
                "service_level": st["service_level"],
                "logged_in": sum(1 for op in everyone if any(a <= mid < b for a, b in logged[op])),
                "available": sum(
                    1 for op in everyone if any(a <= mid < b for a, b in available[op])
                ),
            }
        )
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "threshold_seconds": threshold,
        "start": scenario.start.astimezone(scenario.zone).isoformat(),
        "duration_hours": round(scenario.duration / 3600, 3),
        "operators": len(scenario.operators),
        "total": {
            **stats(all_convs),
            "occupancy": occupancy(everyone, 0, end),
            "longest_queue": longest(lambda t, s, g: True),
            **(
                {"bot": bot_figures(all_convs)}
                if any(s.bot is not None for s in directory.services.values())
                else {}
            ),
        },
        "services": services,
        "groups": groups,
        "hours": hours,
        "hours_of_day": hours_of_day,
        "estimates": estimates,
        "series": series,
    }
    if trace.mode != "virtual":
        report.update(
            {
                "mode": trace.mode,
                "deterministic": False,
                "target": trace.target,
                "ran_seconds": _r(end, 1),
                "capped": trace.capped,
                "errors": len(trace.errors),
                "error_samples": trace.errors[:10],
            }
        )
    return report


def bot_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The chatbot figures of ``rows`` (see the module's docstring)."""
    met = [c for c in rows if "bot" in c]
    outcomes = [c["bot_outcome"] for c in met]
    contained = outcomes.count("contained")
    handoffs: dict[int, int] = defaultdict(int)
    dropoffs: dict[str, int] = defaultdict(int)
    for c in met:
        if c["bot_outcome"] == "handoff":
            handoffs[c["handoff_group"]] += 1
        elif c["bot_outcome"] == "dropped":
            dropoffs[c["dropped_at"]] += 1
    return {
        "conversations": len(met),
        "contained": contained,
        "containment": _r(100.0 * contained / len(met) if met else None, 1),
        "handoffs": {str(g): handoffs[g] for g in sorted(handoffs)},
        "dropoffs": {node: dropoffs[node] for node in sorted(dropoffs)},
        "out_of_hours": outcomes.count("out_of_hours"),
        "in_bot_at_end": outcomes.count("in_bot"),
    }


def bot_nodes(rows: list[dict[str, Any]], bot: Bot, person: bool) -> dict[str, dict[str, Any]]:
    """The per-node table of ``bot`` over ``rows`` (see the module's docstring), in the
    script's order, conditions left out (a visitor sees nothing of them); ``person``: the
    "@person" row (visitors may ask for a person)."""
    said: dict[str, int] = defaultdict(int)
    answers: dict[str, int] = defaultdict(int)
    invalid: dict[str, int] = defaultdict(int)
    closed: dict[str, int] = defaultdict(int)
    chosen: dict[str, int] = defaultdict(int)
    dropoffs: dict[str, int] = defaultdict(int)
    handoffs: dict[str | None, int] = defaultdict(int)
    no_one_open: dict[str | None, int] = defaultdict(int)
    for c in rows:
        if "bot" not in c:
            continue
        for kind, node, data in c["bot_steps"]:
            if kind == "bot":
                said[node] += 1
            elif kind == "group_closed":
                closed[node] += 1
            else:
                answers[node] += 1
                invalid[node] += data.get("valid") is False
                chosen[data.get("option") or ""] += 1
        if c["bot_outcome"] == "dropped":
            dropoffs[c["dropped_at"]] += 1
        elif c["bot_outcome"] == "handoff":
            handoffs[c["handoff"]] += 1
        elif c["bot_outcome"] == "out_of_hours":
            no_one_open[c["handoff"]] += 1
    table: dict[str, dict[str, Any]] = {}
    for node in bot.nodes:
        if isinstance(node, ConditionNode):
            continue
        row: dict[str, Any]
        if isinstance(node, MenuNode | AskNode):
            row = {
                "kind": "menu" if isinstance(node, MenuNode) else "ask",
                "visits": said[node.id],
                "answers": answers[node.id],
            }
            if isinstance(node, AskNode):
                row["invalid"] = invalid[node.id]
            row["dropoffs"] = dropoffs[node.id]
        elif isinstance(node, HandoffNode):
            reached = handoffs[node.id] + closed[node.id] + no_one_open[node.id]
            row = {
                "kind": "handoff",
                "group": node.group,
                "visits": reached,
                "handoffs": handoffs[node.id],
                "closed": closed[node.id],
                "out_of_hours": no_one_open[node.id],
            }
        else:
            row = {
                "kind": "end" if isinstance(node, EndNode) else "message",
                "visits": said[node.id],
            }
        table[node.id] = row
    if person:
        table[PERSON] = {
            "kind": "person",
            "visits": chosen[PERSON],
            "handoffs": handoffs[PERSON],
            "out_of_hours": no_one_open[PERSON],
        }
    return table


def _estimates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How close the estimated waits the answered visitors of ``rows`` were told came to their
    waits (see the module's docstring)."""
    told = [c for c in rows if c["status"] == "answered" and "estimate" in c]
    pairs = [(c["estimate"], c["wait"]) for c in told if c["estimate"] is not None]
    waited = [(estimate, wait) for estimate, wait in pairs if wait >= 1.0]
    return {
        "quoted": len(pairs),
        "unknown": len(told) - len(pairs),
        **accuracy(pairs),
        "waited": {"quoted": len(waited), **accuracy(waited)},
    }


def accuracy(pairs: list[tuple[float, float]]) -> dict[str, float | None]:
    """The accuracy figures of (estimate, wait) pairs (see the module's docstring); None each
    when there are none."""
    if not pairs:
        return dict.fromkeys(
            ("mae", "bias", "median_relative_error", "within_50_percent", "within_1_minute")
        )
    errors = [estimate - wait for estimate, wait in pairs]
    relative = sorted(abs(e - w) / max(w, 1.0) for e, w in pairs)
    middle = len(relative) // 2
    median = (
        relative[middle] if len(relative) % 2 else (relative[middle - 1] + relative[middle]) / 2
    )
    return {
        "mae": _r(sum(map(abs, errors)) / len(errors), 1),
        "bias": _r(sum(errors) / len(errors), 1),
        "median_relative_error": _r(100.0 * median, 1),
        "within_50_percent": _r(100.0 * sum(r <= 0.5 for r in relative) / len(relative), 1),
        "within_1_minute": _r(100.0 * sum(abs(e) <= 60 for e in errors) / len(errors), 1),
    }


def _hour_windows(scenario: Scenario, end: float) -> list[tuple[float, float]]:
    """The run's local hours up to ``end``, as [start, end) offsets; the first and the last can
    be partial."""
    starts = [t for t in _hour_starts(scenario) if t < end]
    return list(zip(starts, [*starts[1:], end], strict=True))


def _queue_peaks(
    changes: list[tuple[float, int, str | None, int | None]], windows: list[tuple[float, float]]
) -> list[int]:
    """The most conversations waiting at once (all services and groups) in each of ``windows``
    (in time order, not overlapping), counting those already waiting when a window opens."""
    peaks = []
    level = k = 0
    ordered = sorted(changes, key=lambda q: (q[0], -q[1]))  # joins before leaves at one instant
    for lo, hi in windows:
        while k < len(ordered) and ordered[k][0] < lo:
            level += ordered[k][1]
            k += 1
        peak = level
        while k < len(ordered) and ordered[k][0] < hi:
            level += ordered[k][1]
            peak = max(peak, level)
            k += 1
        peaks.append(peak)
    return peaks


def _hour_starts(scenario: Scenario) -> list[float]:
    starts = [0.0]
    t = 0.0
    while True:
        t = scenario.next_hour(t)
        if t >= scenario.duration:
            return starts
        starts.append(t)


def event_log(scenario: Scenario, trace: Trace) -> str:
    lines = []
    for e in trace.events:
        at = scenario.local(e.t).isoformat(timespec="milliseconds")
        lines.append(json.dumps({"t": e.t, "at": at, "event": e.kind, **e.data}, sort_keys=True))
    return "\n".join(lines) + "\n"


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


COLUMNS = [
    ("offered", "offered"),
    ("answered", "answd"),
    ("abandoned", "aband"),
    ("out_of_hours", "ooh"),
    ("service_level", "SL%"),
    ("asa", "ASA s"),
    ("p90_wait", "p90 s"),
    ("aht", "AHT s"),
    ("occupancy", "occ%"),
    ("longest_queue", "maxQ"),
]


def to_table(report: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    out = [
        f"Scenario {report['scenario']!r}  seed {report['seed']}  start {report['start']}  "
        f"{report['duration_hours']} h  SL threshold {report['threshold_seconds']} s",
        "",
    ]
    if report.get("mode") == "real-time":
        out[1:1] = [
            f"REAL TIME against {report['target']} (not deterministic): ran "
            f"{report['ran_seconds']} s"
            + (" (stopped by the wall-clock cap)" if report["capped"] else "")
            + f", {report['errors']} agent error(s)"
        ]
        out[2:2] = [f"  {e}" for e in report["error_samples"]]
    sections = [
        ("Service", report["services"]),
        ("Group", report["groups"]),
        ("Hour", report["hours"]),
    ]
    days = {key[:10] for key in report["hours"]}
    if len(days) > 1:  # one day's hours would only repeat the rows above
        sections.append((f"Hour, {len(days)} days pooled", report["hours_of_day"]))
    sections.append(("Total", {"all": report["total"]}))
    for title, rows in sections:
        names = {k: (f"{k} {v['name']}" if "name" in v else k) for k, v in rows.items()}
        width = max([len(title)] + [len(n) for n in names.values()])
        head = title.ljust(width) + "".join(h.rjust(8) for _, h in COLUMNS)
        out += [head, "-" * len(head)]
        for key, row in rows.items():
            out.append(
                names[key][:width].ljust(width)
                + "".join(fmt(row.get(f)).rjust(8) for f, _ in COLUMNS)
            )
        out.append("")
    out += _bot_tables(report, fmt)
    out += _estimates_table(report.get("estimates"), fmt)
    return "\n".join(out)


BOT_COLUMNS = [
    ("conversations", "conv"),
    ("contained", "contd"),
    ("containment", "cont%"),
    ("handoffs", "handoff"),
    ("dropoffs", "dropoff"),
    ("out_of_hours", "ooh"),
    ("in_bot_at_end", "in bot"),
]

NODE_COLUMNS = [
    ("kind", "kind"),
    ("visits", "visits"),
    ("answers", "answers"),
    ("invalid", "invalid"),
    ("dropoffs", "dropoff"),
    ("handoffs", "handoff"),
    ("closed", "closed"),
    ("out_of_hours", "ooh"),
]


def _bot_tables(report: dict[str, Any], fmt: Any) -> list[str]:
    """The ``Chatbot`` table (per service with a bot, and in total) with each row's hand-offs
    per group and drop-offs per node, then each service's table per node of its bot."""
    rows = {f"{k} {v['name']}": v["bot"] for k, v in report["services"].items() if "bot" in v}
    if not rows:
        return []
    rows["all"] = report["total"]["bot"]
    title = "Chatbot"
    width = max([len(title)] + [len(n) for n in rows])
    head = title.ljust(width) + "".join(h.rjust(8) for _, h in BOT_COLUMNS)
    out = [head, "-" * len(head)]
    for name, row in rows.items():
        summed = {
            **row,
            "handoffs": sum(row["handoffs"].values()),
            "dropoffs": sum(row["dropoffs"].values()),
        }
        out.append(name.ljust(width) + "".join(fmt(summed[f]).rjust(8) for f, _ in BOT_COLUMNS))
    for name, row in rows.items():
        groups = ", ".join(
            f"{g} {report['groups'][g]['name']} {n}" for g, n in row["handoffs"].items()
        )
        nodes = ", ".join(f"{node} {n}" for node, n in row["dropoffs"].items())
        out.append(f"{name}: hand-offs {groups or '-'}; drop-offs {nodes or '-'}")
    out.append("")
    for key, service in report["services"].items():
        if "bot" not in service:
            continue
        nodes = service["bot"]["nodes"]
        title = f"Bot {service['bot']['bot']} ({key} {service['name']}), per node"
        width = max([len(title)] + [len(n) for n in nodes])
        head = title.ljust(width) + "".join(h.rjust(8) for _, h in NODE_COLUMNS)
        out += [head, "-" * len(head)]
        for node, row in nodes.items():
            out.append(
                node.ljust(width) + "".join(fmt(row.get(f)).rjust(8) for f, _ in NODE_COLUMNS)
            )
        out.append("")
    return out


ESTIMATE_COLUMNS = [
    ("quoted", "told"),
    ("unknown", "null"),
    ("mae", "MAE s"),
    ("bias", "bias s"),
    ("median_relative_error", "medRE%"),
    ("within_50_percent", "±50%"),
    ("within_1_minute", "±1min"),
]


def _estimates_table(estimates: dict[str, Any] | None, fmt: Any) -> list[str]:
    """The ``Wait estimates`` table: per group and in total, over every answered visitor and
    over those who waited."""
    if not estimates:
        return []
    rows = {f"{k} {v['name']}": v for k, v in estimates["groups"].items()}
    rows["all"] = estimates["total"]
    lines = {}
    for name, row in rows.items():
        lines[name] = row
        lines[f"{name}, waited"] = {**row["waited"], "unknown": None}
    title = "Wait estimates (answered visitors)"
    width = max([len(title)] + [len(n) for n in lines])
    head = title.ljust(width) + "".join(h.rjust(8) for _, h in ESTIMATE_COLUMNS)
    out = [head, "-" * len(head)]
    for name, row in lines.items():
        out.append(
            name.ljust(width) + "".join(fmt(row.get(f)).rjust(8) for f, _ in ESTIMATE_COLUMNS)
        )
    return [*out, ""]


def to_html(report: dict[str, Any]) -> str:
    series = report["series"]
    w, h, pad = 900, 220, 40
    n = max(1, len(series) - 1)
    # One day: a tick every hour ("HH:MM"). Several days: a tick where each local day begins
    # ("MM-DD HH:MM"), as hourly ticks would run into each other.
    if len({p["local"][:10] for p in series}) > 1:
        tick_labels = {
            i: p["local"][5:]
            for i, p in enumerate(series)
            if i == 0 or p["local"][:10] != series[i - 1]["local"][:10]
        }
    else:
        tick_labels = {i: p["local"][11:] for i, p in enumerate(series) if i % 4 == 0}

    def chart(key: str, colour: str, label: str, top: float | None = None) -> str:
        values = [p[key] for p in series]
        ceiling = top or max([v for v in values if v is not None] + [1])
        points = []
        for i, v in enumerate(values):
            if v is None:
                continue
            x = pad + (w - 2 * pad) * i / n
            y = h - pad - (h - 2 * pad) * v / ceiling
            points.append(f"{x:.1f},{y:.1f}")
        ticks = "".join(
            f'<text x="{pad + (w - 2 * pad) * i / n:.1f}" y="{h - pad + 15}" font-size="10" '
            f'text-anchor="middle">{text}</text>'
            for i, text in tick_labels.items()
        )
        return (
            f'<h2>{html.escape(label)}</h2><svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{w}" height="{h}"><rect width="{w}" height="{h}" fill="#fafafa"/>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>'
            f'<text x="5" y="{pad}" font-size="10">{ceiling:g}</text>'
            f'<text x="5" y="{h - pad}" font-size="10">0</text>{ticks}'
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(points)}"/></svg>'
        )

    kind = " (real time)" if report.get("mode") == "real-time" else ""
    title = html.escape(f"Omni simulation{kind}: {report['scenario']} (seed {report['seed']})")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{title}</h1>"
        + chart("queue", "#c0392b", "Longest queue per 15 minutes")
        + chart(
            "service_level",
            "#27ae60",
            f"Service level % (answered within {report['threshold_seconds']:g} s), by arrival time",
            100,
        )
        + chart("logged_in", "#2c3e50", "Operators logged in")
        + chart("available", "#2980b9", "Operators available (not paused)")
        + "</body></html>\n"
    )


def write_outputs(out: Path, scenario: Scenario, trace: Trace, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(to_json(report), encoding="utf-8")
    (out / "report.txt").write_text(to_table(report), encoding="utf-8")
    (out / "events.jsonl").write_text(event_log(scenario, trace), encoding="utf-8")
    (out / "chart.html").write_text(to_html(report), encoding="utf-8")
