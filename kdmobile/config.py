"""Configs are plain frozen dataclasses, read from TOML and overridden from the command line.

    kdmobile distill configs/mnist.toml --set train.epochs=3 --set loss.kd.temperature=4

Every key is checked against the dataclass: a misspelt key is a ``ConfigError`` naming the key and the
valid choices, never silently ignored. Values given with ``--set`` are parsed as TOML literals
(``3``, ``0.5``, ``true``, ``"text"``, ``[1, 2]``); a bare word is taken as a string.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kdmobile.errors import ConfigError, UsageError

C = TypeVar("C")


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "loss.kd.alpha=0.5"]`` → nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is set both as a value and as a table")
        node[parts[-1]] = parse_value(value.strip())
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def build(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, checking every key and coercing simple types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None
    return obj


def load(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    data = read_toml(path) if path is not None else {}
    return build(cls, deep_merge(data, parse_overrides(overrides)))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:
            try:
                return _coerce(a, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (arg, *rest) = typing.get_args(tp) or (Any,)
        items = (
            [_coerce(arg, v, f"{path}[{i}]") for i, v in enumerate(value)] if arg is not Any else list(value)
        )
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {k: (_coerce(vt, v, f"{path}.{k}") if vt is not Any else v) for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{path}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
