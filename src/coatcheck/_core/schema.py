"""Typed session data: a schema the data must match, checked when a session is loaded and when
it is committed.

A schema is a ``TypedDict``, a dataclass or a pydantic model (anything with ``model_validate``),
given once as ``SessionConfig(data_schema=...)``. Rules:

- Stored data that does not match (a deploy changed the schema, a bug wrote bad data) is never
  handed to the app: the request gets a fresh anonymous session, the record is deleted and a
  warning is logged by the manager. Give new fields a default (``NotRequired`` in a TypedDict, a
  default in a dataclass) so that sessions stored before a deploy stay valid.
- Data the app leaves in the session must match when the request commits; otherwise
  :class:`~coatcheck.errors.SessionDataError` is raised (a bug in the app, like a wrong type).
- TypedDicts and dataclasses are checked here, without pydantic, for JSON-shaped annotations:
  ``str``, ``int`` (not ``bool``), ``float`` (an ``int`` too), ``bool``, ``None``, ``Any``,
  ``list[T]``, ``dict[str, T]``, unions (``X | None``), ``Literal[...]`` and nested TypedDicts or
  dataclasses (stored as objects). Extra keys are refused (a schema says what a session holds);
  an annotation outside this list accepts any value. Pydantic models are validated in strict mode.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin, is_typeddict

from ..errors import ConfigurationError, SessionDataError

__all__ = ["Validator", "compile_schema", "to_data"]

Validator = Callable[[dict[str, Any]], None]
"""Raises :class:`SessionDataError` when the data does not match the schema."""

_Check = Callable[[Any, str], None]


def compile_schema(schema: Any) -> Validator:
    """A validator for ``schema``, built once at start-up (a bad schema fails here)."""
    if hasattr(schema, "model_validate"):
        return _pydantic(schema)
    if is_typeddict(schema) or dataclasses.is_dataclass(schema):
        check = _object_check(schema)

        def validate(data: dict[str, Any]) -> None:
            check(data, "session")

        return validate
    raise ConfigurationError(
        f"data_schema must be a TypedDict, a dataclass or a pydantic model, not {schema!r}"
    )


def to_data(value: Any) -> dict[str, Any]:
    """The JSON object a dataclass instance or pydantic model stands for (a dict as it is)."""
    if hasattr(value, "model_dump"):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return value
    raise TypeError(f"{type(value).__name__} is not session data")


def _pydantic(model: Any) -> Validator:
    def validate(data: dict[str, Any]) -> None:
        try:
            model.model_validate(data, strict=True)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise SessionDataError(str(exc)) from None

    return validate


def _fail(path: str, expected: str, value: Any) -> SessionDataError:
    return SessionDataError(f"{path}: expected {expected}, got {type(value).__name__}")


def _object_check(schema: Any) -> _Check:
    """Checks for a TypedDict or a dataclass (both stored as a JSON object)."""
    hints = typing.get_type_hints(schema, include_extras=True)
    required: set[str] = set()
    fields: dict[str, _Check] = {}
    if is_typeddict(schema):
        total = getattr(schema, "__total__", True)
        for name, hint in hints.items():
            origin = get_origin(hint)
            if origin is Required or (total and origin is not NotRequired):
                required.add(name)
            if origin in (Required, NotRequired):
                hint = get_args(hint)[0]
            fields[name] = _check_for(hint)
    else:
        for field in dataclasses.fields(schema):
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                required.add(field.name)
            fields[field.name] = _check_for(hints.get(field.name, Any))
    label = getattr(schema, "__name__", "object")

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _fail(path, f"an object ({label})", value)
        missing = required - value.keys()
        if missing:
            raise SessionDataError(f"{path}: missing {', '.join(sorted(missing))}")
        for key, item in value.items():
            field_check = fields.get(key)
            if field_check is None:
                raise SessionDataError(f"{path}: unexpected key {key!r}")
            field_check(item, f"{path}.{key}")

    return check


def _check_for(hint: Any) -> _Check:
    if hint is Any:
        return lambda value, path: None
    origin = get_origin(hint)
    if origin is typing.Annotated:
        return _check_for(get_args(hint)[0])
    if hint is None or hint is type(None):
        return _exact(type(None), "null")
    if hint is bool:
        return _exact(bool, "a boolean")
    if hint is int:
        return _exact(int, "an integer")
    if hint is float:

        def number(value: Any, path: str) -> None:
            if type(value) not in (int, float):
                raise _fail(path, "a number", value)

        return number
    if hint is str:
        return _exact(str, "a string")
    if origin is Literal:
        allowed = get_args(hint)

        def literal(value: Any, path: str) -> None:
            if not any(type(value) is type(a) and value == a for a in allowed):
                raise SessionDataError(f"{path}: expected one of {list(allowed)!r}")

        return literal
    if origin in (Union, types.UnionType):
        options = [_check_for(arg) for arg in get_args(hint)]

        def union(value: Any, path: str) -> None:
            for option in options:
                try:
                    option(value, path)
                except SessionDataError:
                    continue
                return
            raise _fail(path, str(hint), value)

        return union
    if origin is list or hint is list:
        item = _check_for(get_args(hint)[0]) if get_args(hint) else _check_for(Any)

        def array(value: Any, path: str) -> None:
            if type(value) is not list:
                raise _fail(path, "a list", value)
            for i, element in enumerate(value):
                item(element, f"{path}[{i}]")

        return array
    if origin is dict or hint is dict:
        args = get_args(hint)
        entry = _check_for(args[1]) if args else _check_for(Any)

        def mapping(value: Any, path: str) -> None:
            if type(value) is not dict:
                raise _fail(path, "an object", value)
            for key, element in value.items():
                entry(element, f"{path}.{key}")

        return mapping
    if is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return _object_check(hint)
    return lambda value, path: None  # an annotation JSON cannot express: not checked


def _exact(kind: type, expected: str) -> _Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not kind:
            raise _fail(path, expected, value)

    return check
