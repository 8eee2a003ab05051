"""vmxprobe/schema/validate.py: the keywords the shipped schemas use, as JSON Schema
(Draft 2020-12) defines them; jsonschema's own validator is the reference."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from vmxprobe.host import errnos
from vmxprobe.schema.validate import SchemaError, Validator, shipped

SCHEMA = {
    "type": "object",
    "required": ["n"],
    "additionalProperties": False,
    "properties": {
        "n": {"type": "integer", "minimum": 1, "description": "a count"},
        "s": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3},
        "o": {"type": ["string", "null"]},
        "c": {"const": 1},
        "e": {"enum": ["a", 1, True]},
        "l": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"$ref": "#/$defs/pos"}},
        "m": {
            "type": "object",
            "propertyNames": {"pattern": "^x"},
            "additionalProperties": {"type": "boolean"},
        },
        "any": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "one": {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
    },
    "$defs": {"pos": {"type": "number", "minimum": 0}},
}


@pytest.mark.parametrize(
    "doc",
    [
        {"n": 1},
        {"n": 1.0},  # an integer, as JSON Schema counts
        {"n": True},  # a boolean is not a number
        {"n": 0},
        {"n": 1, "x": 1},
        {},
        {"n": 1, "s": "abc"},
        {"n": 1, "s": "abcd"},
        {"n": 1, "s": "ab\n"},  # $ matches before a final newline in Python's re
        {"n": 1, "s": 5},
        {"n": 1, "o": None},
        {"n": 1, "o": 1},
        {"n": 1, "c": 1.0},
        {"n": 1, "c": True},
        {"n": 1, "e": 1},
        {"n": 1, "e": True},
        {"n": 1, "e": 1.0},
        {"n": 1, "e": "b"},
        {"n": 1, "l": []},
        {"n": 1, "l": [0, 2.5]},
        {"n": 1, "l": [0, -1]},
        {"n": 1, "l": [1, 2, 3]},
        {"n": 1, "m": {"xa": True}},
        {"n": 1, "m": {"ya": True}},
        {"n": 1, "m": {"xa": 1}},
        {"n": 1, "any": None},
        {"n": 1, "any": 3},
        {"n": 1, "one": {"a": 1}},
        {"n": 1, "one": {"a": 1, "b": 2}},
        {"n": 1, "one": {}},
        {"n": 1, "one": 5},  # required applies to objects only
        [],
    ],
)
def test_each_keyword_agrees_with_jsonschema(doc):
    ours = Validator(SCHEMA)
    theirs = jsonschema.Draft202012Validator(SCHEMA)
    assert ours.is_valid(doc) == theirs.is_valid(doc)


def test_a_failure_names_its_json_path_and_the_node_description():
    with pytest.raises(SchemaError) as e:
        Validator(SCHEMA).validate({"n": 0})
    assert str(e.value) == "$.n: must be a count" and e.value.path == "$.n"
    with pytest.raises(SchemaError, match=r"^\$\.m\.ya: does not have the form"):
        Validator(SCHEMA).validate({"n": 1, "m": {"ya": True}})
    with pytest.raises(SchemaError, match=r"^\$\.l\[1\]: "):
        Validator(SCHEMA).validate({"n": 1, "l": [0, -1]})
    with pytest.raises(SchemaError, match=r'^\$: "n" is missing'):
        Validator(SCHEMA).validate({})


def test_a_keyword_it_does_not_implement_makes_the_schema_unusable():
    with pytest.raises(ValueError, match="not implemented"):
        Validator({"type": "object", "properties": {"a": {"uniqueItems": True}}})


def test_the_shipped_fixture_schema_is_a_valid_draft_2020_12_schema():
    schema = json.loads((resources.files("vmxprobe.schema") / "fixture-v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    shipped("fixture-v1.json")  # every keyword it uses is implemented


def test_the_schema_lists_the_kernels_errno_names():
    schema = json.loads((resources.files("vmxprobe.schema") / "fixture-v1.json").read_text())
    assert set(schema["$defs"]["errno"]["enum"]) == errnos.KERNEL_NAMES
