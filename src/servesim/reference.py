"""Generate the scenario reference (docs/scenario-reference.md) from the dataclass docstrings.

``python -m servesim.reference > docs/scenario-reference.md`` regenerates it; a test fails when
the committed file is stale.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, get_type_hints

from servesim.config import field_docs


def _bounds(f: dataclasses.Field[Any]) -> str:
    parts = [f"{sym} {_num(f.metadata[key])}" for key, sym in
             (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if f.metadata.get(key)
             is not None]
    return ", ".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _default(value: Any) -> str:
    from servesim.config import to_plain

    if value is dataclasses.MISSING:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(see below)"
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return "`" + str(to_plain(value)).replace("'", "") + "`"
    if value in ((), [], {}):
        return "empty"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def _section(cls: type, path: str, seen: set[type], out: list[str]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    doc = inspect.getdoc(cls) or ""
    out += [f"## `{path}`", "", doc.split("\n\n")[0], ""]
    out += ["| field | type | default | bounds | description |", "|---|---|---|---|---|"]
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    nested: list[tuple[type, str]] = []
    for name, typ, default, text in field_docs(cls):
        f = fields[name]
        if f.metadata.get("internal"):
            continue
        text = " ".join(text.split()).replace("|", "\\|")
        out.append(f"| `{name}` | {typ} | {_default(default)} | {_bounds(f)} | {text} |")
        for inner in _nested_types(hints[name]):
            nested.append((inner, f"{path}.{name}" if path else name))
    out.append("")
    for inner, p in nested:
        _section(inner, p, seen, out)


def _nested_types(tp: Any) -> list[type]:
    found: list[type] = []
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not hasattr(tp, "from_config"):
            found.append(tp)
        return found
    for arg in getattr(tp, "__args__", ()) or ():
        found += _nested_types(arg)
    return found


def policy_sections(out: list[str]) -> None:
    from servesim.policies import REGISTRY

    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        out += [f"### policy `{name}`", ""]
        first = (inspect.getdoc(cls) or "").split("\n\n")[0]
        out += [first, ""]
        params = cls.Params
        rows = [r for r in field_docs(params)]
        if not rows:
            out += ["No parameters.", ""]
            continue
        out += ["| field | type | default | bounds | description |", "|---|---|---|---|---|"]
        fields = {f.name: f for f in dataclasses.fields(params)}
        for fname, typ, default, text in rows:
            text = " ".join(text.split()).replace("|", "\\|")
            out.append(f"| `policy.{fname}` | {typ} | {_default(default)} | "
                       f"{_bounds(fields[fname])} | {text} |")
        out.append("")


def reference_markdown() -> str:
    """The whole reference page as Markdown."""
    from servesim.scenario import Scenario

    out = [
        "# Scenario reference",
        "",
        "Generated from the dataclass docstrings by `python -m servesim.reference > "
        "docs/scenario-reference.md`; do not edit by hand (a test fails when it is stale).",
        "Every field can be overridden from the CLI with `--set path.to.field=value`.",
        "",
    ]
    _section(Scenario, "", set(), out)
    out[out.index("## ``")] = "## top level"
    out += ["## `policy`", "",
            "`policy.name` picks a registered policy; its parameters sit beside the name.", ""]
    policy_sections(out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
