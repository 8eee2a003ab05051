"""Validation against the JSON Schemas shipped here, for the keywords they use.

The fixture loader checks every fixture against schema/fixture-v1.json with this, so the
loader and the shipped schema cannot say different things (tests/test_properties.py
holds this to jsonschema's Draft 2020-12 validator on generated documents). A full
validator would be a runtime dependency, with its own dependencies, for a tool that
root runs on every host; these keywords are a page of code.

The first failure is raised as SchemaError, naming the JSON path of the value
($.msr["0x3a"][0].cpus) and what it must be: the schema's "description" of the node
that failed, where it has one. A keyword this module does not implement makes the
schema unusable (ValueError), never a constraint silently skipped.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Callable

from vmxprobe.printable import json_path

Schema = dict[str, Any]

_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "$comment", "$defs"})
_KEYWORDS = _ANNOTATIONS | {
    "$ref",
    "type",
    "const",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "required",
    "properties",
    "additionalProperties",
    "propertyNames",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "anyOf",
    "oneOf",
}


# Where a value is: the root "$", or (parent, key). Formatted only when a check fails:
# a fixture of 8192 CPUs holds some 60,000 values.
Path = Any
Check = Callable[[Any, Path], None]


def format_path(path: Path) -> str:
    keys = []
    while isinstance(path, tuple):
        path, key = path
        keys.append(key)
    text = str(path)
    for key in reversed(keys):
        text = json_path(text, key)
    return text


class SchemaError(ValueError):
    """A document the schema refuses: `path` is where, the message says what."""

    def __init__(self, where: Path, what: str):
        self.path = format_path(where)
        super().__init__(f"{self.path}: {what}")
        self.where = where
        self.what = what


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# JSON Schema's types. An integer is any number with no fraction (1.0 is one); a boolean
# is never a number.
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: _is_number(v) and (not isinstance(v, float) or v.is_integer()),
}


# The types one Python class stands for (a JSON boolean is a bool, never 0 or 1).
_CLASSES: dict[str, type] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
    "null": type(None),
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, and containers compare item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


class Validator:
    """A schema compiled once into one check per node, each doing only the keywords its
    node has."""

    def __init__(self, schema: Schema):
        self.root = schema
        self._compiled: dict[int, Check] = {}
        self._check = self._compile(schema)

    def is_valid(self, instance: Any) -> bool:
        try:
            self.validate(instance)
        except SchemaError:
            return False
        return True

    def validate(self, instance: Any) -> None:
        try:
            self._check(instance, "$")
        except RecursionError:
            raise SchemaError("$", "nested too deeply") from None

    def _resolve(self, ref: str) -> Schema:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are implemented, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        result: Schema = node
        return result

    def _compile(self, node: Schema) -> Check:
        """The check of one node, compiled once (a node that refers to itself, through
        $defs, is reached through its entry here)."""
        key = id(node)
        if key not in self._compiled:
            unknown = set(node) - _KEYWORDS
            if unknown:
                raise ValueError(f"schema keyword(s) {sorted(unknown)} are not implemented here")
            cell: list[Check] = []
            self._compiled[key] = lambda v, p: cell[0](v, p)
            cell.append(self._build(node))
            self._compiled[key] = cell[0]
        return self._compiled[key]

    def _fail(self, node: Schema, where: Path, fallback: str) -> SchemaError:
        what = node.get("description")
        if what is None and "$ref" in node:
            what = self._resolve(node["$ref"]).get("description")
        return SchemaError(where, f"must be {what}" if what else fallback)

    def _build(self, node: Schema) -> Check:
        fail = self._fail
        if node.get("type") == "string" and set(node) <= {"type", "pattern", "description"}:
            # Most nodes of a fixture: a string of a pattern (a path, a hex value), in one
            # check.
            search = re.compile(node.get("pattern", "")).search

            def text(v: Any, p: Path) -> None:
                if not isinstance(v, str):
                    raise fail(node, p, "must be of type string")
                if not search(v):
                    raise fail(node, p, "does not have the form it must have")

            return text
        checks: list[Check] = []
        if "$ref" in node:
            target = self._compile(self._resolve(node["$ref"]))
            if "description" in node:

                def ref(v: Any, p: Path, target: Check = target) -> None:
                    try:
                        target(v, p)
                    except SchemaError as e:
                        # A failure of this value itself is said as this node says
                        # what it must be (a fixture's name, not any line of text).
                        if e.where is not p:
                            raise
                        raise fail(node, p, e.what) from None

                checks.append(ref)
            else:
                checks.append(target)
        if "type" in node:
            names = node["type"] if isinstance(node["type"], list) else [node["type"]]
            other = f"must be of type {' or '.join(names)}"
            if all(t in _CLASSES for t in names):
                classes = tuple(_CLASSES[t] for t in names)

                def of_type(v: Any, p: Path) -> None:
                    if not isinstance(v, classes):
                        raise fail(node, p, other)

            else:
                tests = [_TYPES[t] for t in names]

                def of_type(v: Any, p: Path) -> None:
                    if not any(t(v) for t in tests):
                        raise fail(node, p, other)

            checks.append(of_type)
        if "const" in node:
            const = node["const"]

            def is_const(v: Any, p: Path) -> None:
                if not _equal(v, const):
                    raise fail(node, p, f"must be {json.dumps(const)}")

            checks.append(is_const)
        if "enum" in node:
            checks.append(self._enum(node))
        strings = self._strings(node)
        if strings:
            checks.append(lambda v, p: strings(v, p) if isinstance(v, str) else None)
        objects = self._objects(node)
        if objects:
            checks.append(lambda v, p: objects(v, p) if isinstance(v, dict) else None)
        arrays = self._arrays(node)
        if arrays:
            checks.append(lambda v, p: arrays(v, p) if isinstance(v, list) else None)
        if "minimum" in node:
            low = node["minimum"]

            def at_least(v: Any, p: Path) -> None:
                if _is_number(v) and v < low:
                    raise fail(node, p, f"must be at least {low}")

            checks.append(at_least)
        for word in ("anyOf", "oneOf"):
            if word in node:
                checks.append(self._alternatives(node, word))
        if len(checks) == 1:
            return checks[0]

        def check(v: Any, p: Path) -> None:
            for c in checks:
                c(v, p)

        return check

    def _enum(self, node: Schema) -> Check:
        values = node["enum"]
        strings = frozenset(values) if all(isinstance(e, str) for e in values) else None
        other = "must be one of " + ", ".join(map(json.dumps, values))

        def in_enum(v: Any, p: Path) -> None:
            ok = (
                (isinstance(v, str) and v in strings)
                if strings is not None
                else any(_equal(v, e) for e in values)
            )
            if not ok:
                raise self._fail(node, p, other)

        return in_enum

    def _strings(self, node: Schema) -> Check | None:
        if not {"pattern", "minLength", "maxLength"} & set(node):
            return None
        search = re.compile(node["pattern"]).search if "pattern" in node else None
        low, high = node.get("minLength", 0), node.get("maxLength")

        def string(v: str, p: Path) -> None:
            if search is not None and not search(v):
                raise self._fail(node, p, "does not have the form it must have")
            if len(v) < low or (high is not None and len(v) > high):
                raise self._fail(node, p, "is not of a length it may have")

        return string

    def _objects(self, node: Schema) -> Check | None:
        if not {"required", "properties", "additionalProperties", "propertyNames"} & set(node):
            return None
        required = tuple(node.get("required", ()))
        props = {k: self._compile(sub) for k, sub in node.get("properties", {}).items()}
        names = self._compile(node["propertyNames"]) if "propertyNames" in node else None
        extra = node.get("additionalProperties", True)
        more = self._compile(extra) if isinstance(extra, dict) else None
        fields = ", ".join(sorted(props))

        def obj(v: dict[str, Any], p: Path) -> None:
            for key in required:
                if key not in v:
                    raise SchemaError(p, f'"{key}" is missing')
            for key, item in v.items():
                at = (p, key)
                if names is not None:
                    names(key, at)
                check = props.get(key)
                if check is not None:
                    check(item, at)
                elif extra is False:
                    raise SchemaError(at, f"not a field here (the fields are {fields})")
                elif more is not None:
                    more(item, at)

        return obj

    def _arrays(self, node: Schema) -> Check | None:
        if not {"items", "minItems", "maxItems"} & set(node):
            return None
        items = self._compile(node["items"]) if "items" in node else None
        low, high = node.get("minItems", 0), node.get("maxItems")

        def array(v: list[Any], p: Path) -> None:
            if len(v) < low or (high is not None and len(v) > high):
                raise self._fail(node, p, "does not have the number of items it must have")
            if items is not None:
                for i, item in enumerate(v):
                    items(item, (p, i))

        return array

    def _alternatives(self, node: Schema, word: str) -> Check:
        subs = [self._compile(sub) for sub in node[word]]

        def valid(check: Check, v: Any, p: Path) -> bool:
            try:
                check(v, p)
            except SchemaError:
                return False
            return True

        if word == "anyOf":

            def any_of(v: Any, p: Path) -> None:
                if not any(valid(c, v, p) for c in subs):
                    raise self._fail(node, p, "matches none of the forms it may take")

            return any_of

        def one_of(v: Any, p: Path) -> None:
            if sum(valid(c, v, p) for c in subs) != 1:
                raise self._fail(node, p, "must match exactly one of the forms it may take")

        return one_of


@functools.cache
def shipped(name: str) -> Validator:
    """A validator of the schema `name` shipped in this package ("fixture-v1.json")."""
    return Validator(json.loads((resources.files("vmxprobe.schema") / name).read_text(encoding="utf-8")))
