"""Figures derived from several cases (the families of :mod:`benchmarks.cases`) and the targets
table: Markdown, so the output pastes into ``benchmarks/README.md`` as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.cases import FAMILIES

Record = dict[str, Any]


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _of(cases: list[Record], family: str) -> list[Record]:
    return [c for c in cases if family in c.get("families", []) and "error" not in c]


def _label(c: Record) -> str:
    return str(c.get("label") or c["name"])


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of ``log y`` against ``log x`` (None with fewer than 2 points)."""
    if len(x) < 2:
        return None
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


# --- per family -----------------------------------------------------------------------------


def fig11_section(cases: list[Record]) -> list[str]:
    rows = []
    for c in _of(cases, "aegaeon-fig11"):
        rows.append([
            _label(c), _num(c["requests"]), _num(c["events"]), _num(c["wall_seconds"], 2),
            _num(c.get("cli_wall_seconds"), 2), _num(c.get("stepwise_events")),
            _num(c.get("stepwise_event_ratio"), 1),
            "-" if c["slo_attainment"] is None else f"{c['slo_attainment']:.4f}",
        ])
    if not rows:
        return []
    out = [_markdown(["point", "requests", "events", "simulate s", "servesim run s",
                      "stepwise events", "event ratio", "SLO att."], rows)]
    probes = [c for c in _of(cases, "aegaeon-fig11") if "startup_import_seconds" in c]
    if probes:
        imp = min(c["startup_import_seconds"] for c in probes)
        first = min(c["startup_first_kernel_seconds"] for c in probes)
        out.append(f"start-up of a fresh process (fastest probe): imports {imp:.2f} s, first "
                   f"kernel call (numba initialisation + cache load) {first:.2f} s")
    cold = [c for c in probes if c.get("cli_cold_wall_seconds") is not None]
    for c in cold:
        out.append(f"{_label(c)} with an empty numba cache (compiles every kernel): "
                   f"{c['cli_cold_wall_seconds']:.2f} s, vs {c['cli_wall_seconds']:.2f} s cached")
    return out


def vtc_section(cases: list[Record]) -> list[str]:
    rows = [[
        _label(c), _num(c["requests"]), _num(c["events"]), _num(c["wall_seconds"], 3),
        _num(c["requests_per_second"]),
        "-" if c.get("jain_index") is None else f"{c['jain_index']:.4f}",
        _num(c.get("service_diff_max"), 1),
    ] for c in _of(cases, "vtc-real")]
    if not rows:
        return []
    return [_markdown(["policy", "requests", "events", "wall s", "req/s", "Jain",
                       "service diff max"], rows)]


def _base_pairs(members: list[Record]) -> list[tuple[Record, Record]]:
    by_name = {c["name"]: c for c in members}
    return [(by_name[c["baseline"]], c) for c in members
            if c.get("baseline") in by_name]


def scaling_points(cases: list[Record]) -> list[Record]:
    """The scaling-curve cases with every output at its sampled length, by requests."""
    pts = [c for c in _of(cases, "scaling-curve")
           if not c.get("overrides", {}).get("workload.output_scale")]
    return sorted(pts, key=lambda c: c["requests"])


def scaling_section(cases: list[Record]) -> list[str]:
    members = _of(cases, "scaling-curve")
    if not members:
        return []
    rows = [[
        _label(c), _num(c["requests"]), _num(c["tokens"]), _num(c["events"]),
        _num(c["events_per_request"], 2), _num(c["wall_seconds"], 2),
        _num(c.get("cpu_seconds"), 2), _num(c["requests_per_second"]),
        _num(c["peak_rss_mib"]),
    ] for c in sorted(members, key=lambda c: (c["requests"], c["tokens"]))]
    out = [_markdown(["point", "requests", "tokens", "events", "events/req", "wall s", "CPU s",
                      "req/s", "peak RSS MiB"], rows)]
    pts = scaling_points(cases)
    slope = loglog_slope([c["requests"] for c in pts], [c["wall_seconds"] for c in pts])
    if slope is not None:
        cpu = loglog_slope([c["requests"] for c in pts], [c["cpu_seconds"] for c in pts])
        ev = loglog_slope([c["requests"] for c in pts], [c["events"] for c in pts])
        out.append(f"log-log slope against requests ({', '.join(_label(c) for c in pts)}): "
                   f"wall time {slope:.3f}, CPU time {cpu:.3f}, events {ev:.3f}")
    for base, c in _base_pairs(members):
        out.append(
            f"{_label(c)} vs {_label(base)}: tokens x{c['tokens'] / base['tokens']:.2f}, "
            f"events x{c['events'] / base['events']:.3f} "
            f"({(c['events'] - base['events']) / base['events']:+.1%}), "
            f"wall time x{c['wall_seconds'] / base['wall_seconds']:.2f}, "
            f"CPU time x{c['cpu_seconds'] / base['cpu_seconds']:.2f}")
    return out


def memory_section(cases: list[Record]) -> list[str]:
    pts = sorted(_of(cases, "memory"), key=lambda c: c["requests"])
    if not pts:
        return []
    rows = []
    for c in pts:
        grew = c["peak_rss_mib"] - (c.get("rss_before_run_mib") or 0.0)
        rows.append([
            _label(c), _num(c["requests"]), _num(c["tokens"]), _num(c["peak_rss_mib"]),
            _num(c.get("rss_before_run_mib")), _num(grew),
            _num(grew * 2**20 / c["requests"]) if c["requests"] else "-",
        ])
    out = [_markdown(["point", "requests", "tokens", "peak RSS MiB", "RSS before run MiB",
                      "run's growth MiB", "bytes/request"], rows)]
    if len(pts) >= 2:
        x = np.array([c["requests"] for c in pts], float)
        y = np.array([(c["peak_rss_mib"] - (c.get("rss_before_run_mib") or 0.0)) * 2**20
                      for c in pts])
        per, fixed = np.polyfit(x, y, 1)
        out.append(f"linear fit of the run's growth: {per:,.0f} bytes per request + "
                   f"{fixed / 2**20:,.0f} MiB; log-log slope {loglog_slope(list(x), list(y)):.3f}")
    return out


def stepwise_section(cases: list[Record]) -> list[str]:
    rows = [[
        _label(c), _num(c["requests"]), _num(c["tokens"]), _num(c["events"]),
        _num(c.get("stepwise_events")), _num(c.get("stepwise_event_ratio"), 1),
        _num(c["wall_seconds"], 2), _num(c.get("stepwise_wall_seconds"), 2),
        _num(c.get("stepwise_speed_ratio"), 1),
        "yes" if c.get("stepwise_same_summary") else
        "NO: " + ", ".join(c.get("stepwise_summary_differs", []))[:40],
    ] for c in _of(cases, "fast-vs-stepwise")]
    if not rows:
        return []
    return [_markdown(["scenario", "requests", "tokens", "fast events", "stepwise events",
                       "event ratio", "fast s", "stepwise s", "speed ratio", "same summary"],
                      rows)]


def plain_section(family: str) -> Callable[[list[Record]], list[str]]:
    """A family without figures of its own: size, speed and SLO attainment per case."""

    def section(cases: list[Record]) -> list[str]:
        rows = [[
            _label(c), _num(c["requests"]), _num(c["events"]), _num(c["events_per_request"], 2),
            _num(c["wall_seconds"], 2), _num(c.get("cpu_seconds"), 2),
            _num(c["requests_per_second"]), _num(c["peak_rss_mib"]),
            "-" if c["slo_attainment"] is None else f"{c['slo_attainment']:.4f}",
        ] for c in _of(cases, family)]
        if not rows:
            return []
        return [_markdown(["case", "requests", "events", "events/req", "wall s", "CPU s",
                           "req/s", "peak RSS MiB", "SLO att."], rows)]

    return section


SECTIONS: dict[str, Callable[[list[Record]], list[str]]] = {
    "aegaeon-fig11": fig11_section,
    "vtc-real": vtc_section,
    "scaling-curve": scaling_section,
    "memory": memory_section,
    "scale-pooled": plain_section("scale-pooled"),
    "fast-vs-stepwise": stepwise_section,
}


def family_sections(cases: list[Record]) -> list[str]:
    """One Markdown section per family with records: a title line, then tables and lines."""
    out = []
    for name, fn in SECTIONS.items():
        body = fn(cases)
        if body:
            out.append("\n\n".join([f"### {name}: {FAMILIES[name].notes}", *body]))
    return out


# --- targets --------------------------------------------------------------------------------


def _status(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**missed**")


def target_rows(cases: list[Record]) -> list[list[str]]:
    """``[target, figure, met/missed]`` for every target the records allow checking."""
    rows: list[list[str]] = []
    ok = [c for c in cases if "error" not in c]
    for c in ok:
        t = c.get("target_requests_per_second")
        if t is not None:
            rows.append([f"{c['name']}: >= {t:,.0f} simulated req/s",
                         f"{c['requests_per_second']:,.0f} req/s ({c['requests']:,} in "
                         f"{c['wall_seconds']:.2f} s)", _status(c["requests_per_second"] >= t)])
    fig = [c for c in ok if c.get("target_cli_seconds") is not None
           and c.get("cli_wall_seconds") is not None]
    if fig:
        worst = max(fig, key=lambda c: c["cli_wall_seconds"])
        limit = worst["target_cli_seconds"]
        slow = sum(c["cli_wall_seconds"] >= c["target_cli_seconds"] for c in fig)
        rows.append([f"aegaeon-fig11: every point < {limit:g} s including start-up",
                     f"slowest {_label(worst)}: {worst['cli_wall_seconds']:.2f} s; "
                     f"{len(fig) - slow} of {len(fig)} points under",
                     _status(slow == 0)])
    for c in ok:
        t = c.get("target_event_ratio")
        if t is not None and c.get("stepwise_event_ratio") is not None:
            rows.append([f"{c['name']}: >= {t:g}x fewer events than stepwise",
                         f"{c['stepwise_event_ratio']:.1f}x ({c['events']:,} vs "
                         f"{c['stepwise_events']:,})", _status(c["stepwise_event_ratio"] >= t)])
    for c in ok:
        t = c.get("target_wall_seconds")
        if t is not None:
            rows.append([f"{c['name']}: < {t:g} s", f"{c['wall_seconds']:.1f} s wall "
                         f"(CPU {c['cpu_seconds']:.1f} s), {c['requests']:,} requests",
                         _status(c["wall_seconds"] < t)])
        t = c.get("target_peak_rss_mib")
        if t is not None:
            rows.append([f"{c['name']}: < {t / 1024:g} GiB peak RSS",
                         f"{c['peak_rss_mib']:,.0f} MiB", _status(c["peak_rss_mib"] < t)])
    pts = scaling_points(ok)
    slope = loglog_slope([c["requests"] for c in pts], [c["wall_seconds"] for c in pts])
    if slope is not None:
        rows.append(["scaling-curve: log-log slope of wall time vs requests in [0.9, 1.1]",
                     f"{slope:.3f} over {', '.join(_label(c) for c in pts)}",
                     _status(0.9 <= slope <= 1.1)])
    for base, c in _base_pairs(_of(ok, "scaling-curve")):
        change = (c["events"] - base["events"]) / base["events"]
        rows.append([f"{_label(c)}: events change < 10 % when outputs double",
                     f"{change:+.1%} (tokens x{c['tokens'] / base['tokens']:.2f})",
                     _status(abs(change) < 0.10)])
    return rows


def targets_table(cases: list[Record], quick: bool = False) -> str:
    rows = target_rows(cases)
    if not rows:
        return ""
    table = _markdown(["target", "figure", "status"], rows)
    return table + ("\n\n(quick run: sizes x0.1, targets indicative only)" if quick else "")
