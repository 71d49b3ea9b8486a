"""Typed reading of JSON into dataclasses: every field present (or defaulted) and of its
declared type, or one line naming the field and what it holds.

A manifest comes from disk and may be hostile or broken; nothing in it is trusted by shape.
"""

from __future__ import annotations

import dataclasses
import types
import typing


class SchemaError(ValueError):
    """`where`: the field's path, e.g. `artifacts[2].files[0].bytes`."""


def build(cls, data, where: str = ""):
    """An instance of dataclass `cls` from `data`, checked field by field."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where or 'the document'} must be an object, not {_kind(data)}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise SchemaError(f"{where or 'the document'} has unknown fields {', '.join(unknown)}")
    values = {}
    for spec in dataclasses.fields(cls):
        path = f"{where}.{spec.name}" if where else spec.name
        if spec.name in data:
            values[spec.name] = convert(hints[spec.name], data[spec.name], path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{path} is missing")
    return cls(**values)


def convert(kind, value, where: str):
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [a for a in arguments if a is not type(None)]
        return convert(inner, value, where)
    if dataclasses.is_dataclass(kind):
        return build(kind, value, where)
    if origin is list:
        _require(isinstance(value, list), where, "a list", value)
        return [convert(arguments[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict or kind is dict:
        _require(isinstance(value, dict), where, "an object", value)
        if not arguments:
            return value
        return {convert(arguments[0], k, f"{where} key"): convert(arguments[1], v, f"{where}.{k}")
                for k, v in value.items()}
    if kind is bool:
        _require(isinstance(value, bool), where, "true or false", value)
    elif kind is int:
        _require(isinstance(value, int) and not isinstance(value, bool), where, "an integer",
                 value)
    elif kind is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), where,
                 "a number", value)
        return float(value)
    elif kind is str:
        _require(isinstance(value, str), where, "a string", value)
    return value


def _require(ok: bool, where: str, expected: str, value) -> None:
    if not ok:
        raise SchemaError(f"{where} must be {expected}, not {_kind(value)}")


def _kind(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
