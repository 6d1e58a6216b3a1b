"""Generate the policy input's JSON Schema from the pydantic models.

``python -m airflow_consent.schema`` rewrites ``policies/schemas/input.json``; a test fails when the
committed file drifts from the models. ``opa check --strict --schema policies/schemas`` type-checks
every rule's use of ``input`` against it.

OPA's type checker gives up on ``$ref`` and on nullable unions (``anyOf: [X, null]``) and then
checks nothing, so references are inlined and ``X | None`` is written as ``X``: a rule must
still test for null, but a misspelt field is a compile error.
"""

from __future__ import annotations

import json
from pathlib import Path

from airflow_consent.models import PolicyInput
from airflow_consent.policies import policy_dir


def input_schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, trailing newline."""
    schema = PolicyInput.model_json_schema()
    definitions = schema.pop("$defs", {})
    return json.dumps(_for_opa(schema, definitions), indent=2, sort_keys=True) + "\n"


def _for_opa(node: object, definitions: dict) -> object:
    if isinstance(node, list):
        return [_for_opa(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _for_opa(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        return _for_opa({**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}, definitions)
    return {key: _for_opa(value, definitions) for key, value in node.items()}


def schema_path() -> Path:
    return policy_dir() / "schemas" / "input.json"


if __name__ == "__main__":
    schema_path().write_text(input_schema_text())
    print(f"wrote {schema_path()}")
