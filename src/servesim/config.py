"""Frozen, validated configuration dataclasses built from plain YAML data.

Every config field is declared with :func:`fld`, which records a docstring and bounds in the
field's metadata. :func:`build` turns a dict into a dataclass, checking unknown keys (with
did-you-mean), types, ``Literal`` choices and numeric bounds, and raising a one-line
:class:`~servesim.errors.ScenarioError` that names the field path::

    workload.rate: must be > 0, got -1
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from servesim.errors import ScenarioError, did_you_mean

T = TypeVar("T")
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_INT64 = 2**63  # every integer field ends up in numpy int64 arrays or arithmetic
_MISSING = dataclasses.MISSING


def fld(
    default: Any = _MISSING,
    doc: str = "",
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    factory: Any = _MISSING,
) -> Any:
    """A dataclass field with a docstring and numeric bounds kept in its metadata."""
    meta = {"doc": doc, "gt": gt, "ge": ge, "lt": lt, "le": le}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested thousands deep (YAML flow lists, in-code dicts)
        text = f"a {type(value).__name__} nested too deeply"
    return text if len(text) <= 60 else text[:57] + "..."


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a :class:`ScenarioError` naming ``path``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ScenarioError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path)
            except ScenarioError as exc:
                errors.append(exc)
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            raise errors[0]
        raise ScenarioError(f"{path}: expected {_describe(tp)}, got {_short(value)}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, str):
            for c in choices:
                if isinstance(c, str) and c.lower() == value.lower():
                    return c
        elif value in choices and not isinstance(value, bool):
            return value
        hint = did_you_mean(value if isinstance(value, str) else _short(value),
                            [str(c) for c in choices])
        raise ScenarioError(
            f"{path}: {_short(value)} is not allowed{hint}; allowed: "
            + ", ".join(str(c) for c in choices)
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, typing.cast(type, tp)):
            return value
        hook = getattr(tp, "from_config", None)
        if hook is not None:
            return hook(value, path)
        if not isinstance(value, dict):
            raise ScenarioError(f"{path}: expected a mapping, got {_short(value)}")
        return build(tp, value, path)  # type: ignore[arg-type]
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1] or (Any,)
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            raise ScenarioError(f"{path}: expected a list, got {_short(value)}")
        return tuple(convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        kt, vt = get_args(tp) or (Any, Any)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ScenarioError(f"{path}: expected a mapping, got {_short(value)}")
        return {convert(kt, k, path): convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ScenarioError(f"{path}: expected true or false, got {_short(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ScenarioError(f"{path}: expected an integer, got {_short(value)}")
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if not isinstance(value, int):
            raise ScenarioError(f"{path}: expected an integer, got {_short(value)}")
        if not -_INT64 <= value < _INT64:
            raise ScenarioError(
                f"{path}: expected a 64-bit integer (-2**63 <= value < 2**63), got {_short(value)}"
            )
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 8.0e9 (no exponent sign) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{path}: expected a number, got {_short(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ScenarioError(f"{path}: expected a finite number, got {_short(value)}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ScenarioError(f"{path}: expected a string, got {_short(value)}")
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _bound(value: float) -> str:
    # integer bounds exactly (seed: "< 9223372036854775808", not "< 9.22337e+18")
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_bounds(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    meta = f.metadata
    for key, ok, word in (
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("lt", lambda v, b: v < b, "<"),
        ("le", lambda v, b: v <= b, "<="),
    ):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            parts = [f"{w} {_bound(meta[k])}" for k, w in (("gt", ">"), ("ge", ">="),
                                                             ("lt", "<"), ("le", "<="))
                     if meta.get(k) is not None]
            raise ScenarioError(f"{path}: must be {' and '.join(parts)}, got {_short(value)}")
        del word


@typing.no_type_check
def build(cls: type[T], data: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating every field (see module docstring)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ScenarioError(f"{path or 'scenario'}: expected a mapping, got {_short(data)}")
    hints = get_type_hints(cls)
    fields = {
        f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")
    }
    prefix = f"{path}." if path else ""
    if any(isinstance(k, bool) for k in data):
        # YAML 1.1 reads the keys on/off/yes/no as booleans: map them back to field names
        names = {True: ("on", "yes"), False: ("off", "no")}
        data = {
            next((n for n in names[k] if n in fields), k) if isinstance(k, bool) else k: v
            for k, v in data.items()
        }
    for key in data:
        if not isinstance(key, str) or key not in fields:
            hint = did_you_mean(str(key), fields)
            raise ScenarioError(
                f"{prefix}{key}: unknown field{hint}; allowed: {', '.join(fields)}"
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            value = convert(hints[name], data[name], prefix + name)
            _check_bounds(f, value, prefix + name)
            kwargs[name] = value
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ScenarioError(f"{prefix}{name}: required field is missing")
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if post is not None:
        post(path)
    return obj


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists (for writing the resolved scenario)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        hook = getattr(obj, "to_config", None)
        if hook is not None:
            return hook()
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal")
        }
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def field_docs(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type description, default, doc)`` of every field of ``cls``."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING  # type: ignore[misc]
            else _MISSING
        )
        rows.append((f.name, _describe(hints[f.name]), default, f.metadata.get("doc", "")))
    return rows
