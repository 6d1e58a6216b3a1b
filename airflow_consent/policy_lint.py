"""The checks of a policy directory that ``opa check`` cannot make: rule METADATA and layout.

Run as ``python -m airflow_consent.policy_lint [--opa PATH] DIR`` (``scripts/check-policies`` does);
``tests/test_policies.py`` calls :func:`lint` and :func:`rule_metadata`. Every problem names the file,
the rule (or package) and what is wrong. Standard library only, like ``engines.opa_binary``: it runs
wherever the OPA binary does.

What it checks, as ``policies/README.md`` ("Adding a rule") asks of a policy author:

- every package lives in the directory its name spells (``consent.rules.x`` in ``consent/rules/x/``;
  a ``_test`` package beside the package it tests);
- every rule package ``consent.rules.<rule>`` has a package ``# METADATA`` block with a ``title``,
  a ``description`` and ``custom:`` ``id`` (unique across rules), ``severity`` (one of
  :data:`SEVERITIES`), ``regulation`` (a non-empty list of references), ``remediation`` (non-empty)
  and ``recoverable`` (a boolean), and no other custom field (a misspelt one would be ignored);
- every rule has ``examples/<rule>.json`` whose expected violation carries the rule's id, and every
  example names a rule;
- a schema annotation on a ``data`` path (``consent/consent.rego`` types ``data.consent.reference``)
  names exactly the ``data.json`` files there are, so that a rule reading misspelt reference data
  fails ``opa check --strict`` and the schema itself cannot name data that does not exist.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from airflow_consent.errors import PolicyLintError

RULES_PACKAGE = "data.consent.rules."
SEVERITIES = ("critical", "high", "medium", "low")
CUSTOM_FIELDS = ("id", "severity", "regulation", "remediation", "recoverable")
TEST_SUFFIX = "_test"


@dataclass(frozen=True)
class LintProblem:
    """One thing wrong with a policy directory: where, about which rule or package, and what."""

    file: str
    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.subject}: {self.problem}"


@dataclass(frozen=True)
class Rule:
    """A rule package: its name (the package's last segment), file and package METADATA."""

    name: str
    file: str
    metadata: dict


def inspect_policies(policy_dir: Path | str, opa_binary: Path | str) -> dict:
    """``opa inspect --annotations`` of the directory, file names relative to it."""
    process = subprocess.run(
        [str(opa_binary), "inspect", "--annotations", "--format", "json", "."],
        cwd=policy_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if process.returncode != 0:
        raise PolicyLintError(f"opa inspect {policy_dir} failed: {process.stderr.strip() or process.stdout.strip()}")
    return json.loads(process.stdout)


def rule_metadata(policy_dir: Path | str, opa_binary: Path | str, inspected: dict | None = None) -> dict[str, Rule]:
    """Rule name → the rule, for every non-test package under ``consent.rules`` (``inspected``: an
    :func:`inspect_policies` answer already at hand)."""
    inspected = inspected if inspected is not None else inspect_policies(policy_dir, opa_binary)
    annotations = {
        _dotted(entry["path"]): entry["annotations"]
        for entry in inspected.get("annotations", [])
        if entry["annotations"].get("scope") == "package"
    }
    return {
        package.removeprefix(RULES_PACKAGE): Rule(
            name=package.removeprefix(RULES_PACKAGE),
            file=_clean(sorted(files)[0]),
            metadata=annotations.get(package, {}),
        )
        for package, files in inspected.get("namespaces", {}).items()
        if package.startswith(RULES_PACKAGE) and not package.endswith(TEST_SUFFIX)
    }


def lint(policy_dir: Path | str, opa_binary: Path | str) -> list[LintProblem]:
    """Every problem of the policy directory; empty when it meets the policy contract."""
    policy_dir = Path(policy_dir)
    inspected = inspect_policies(policy_dir, opa_binary)
    rules = rule_metadata(policy_dir, opa_binary, inspected)
    problems = _layout_problems(inspected)
    if not rules:
        problems.append(LintProblem(".", "data.consent.rules", "no rule packages: every partition would be allowed"))
    for rule in rules.values():
        problems += [LintProblem(rule.file, rule.name, problem) for problem in _metadata_problems(rule.metadata)]
    problems += _duplicate_id_problems(rules)
    problems += _example_problems(policy_dir, rules)
    problems += _data_schema_problems(policy_dir, inspected)
    return [LintProblem(str(policy_dir / p.file), p.subject, p.problem) for p in problems]


def _layout_problems(inspected: dict) -> list[LintProblem]:
    problems = []
    for package, files in inspected.get("namespaces", {}).items():
        segments = package.split(".")[1:]
        segments[-1] = segments[-1].removesuffix(TEST_SUFFIX)
        directory = "/".join(segments)
        for file in map(_clean, files):
            if str(Path(file).parent) != directory:
                problems.append(LintProblem(file, package, f"the package belongs in directory {directory}/"))
    return problems


def _metadata_problems(metadata: dict) -> list[str]:
    if not metadata:
        return ["no package METADATA block (title, description, custom: id, severity, ...)"]
    problems = [f"{field} is missing or empty" for field in ("title", "description") if not _text(metadata.get(field))]
    custom = metadata.get("custom") or {}
    problems += [f"custom.{field} is missing" for field in CUSTOM_FIELDS if field not in custom]
    problems += [
        f"custom.{field} is not a METADATA field (one of {', '.join(CUSTOM_FIELDS)})"
        for field in sorted(custom)
        if field not in CUSTOM_FIELDS
    ]
    if "id" in custom and not _text(custom["id"]):
        problems.append(f"custom.id {custom['id']!r} is not a non-empty string")
    if "severity" in custom and custom["severity"] not in SEVERITIES:
        problems.append(f"custom.severity {custom['severity']!r} is not one of {', '.join(SEVERITIES)}")
    regulation = custom.get("regulation")
    if "regulation" in custom and not (isinstance(regulation, list) and regulation and all(map(_text, regulation))):
        problems.append(f"custom.regulation {regulation!r} is not a non-empty list of references")
    if "remediation" in custom and not _text(custom["remediation"]):
        problems.append("custom.remediation is empty")
    if "recoverable" in custom and not isinstance(custom["recoverable"], bool):
        problems.append(f"custom.recoverable {custom['recoverable']!r} is not a boolean (true or false)")
    return problems


def _duplicate_id_problems(rules: dict[str, Rule]) -> list[LintProblem]:
    by_id: dict[str, list[Rule]] = {}
    for rule in rules.values():
        rule_id = (rule.metadata.get("custom") or {}).get("id")
        if isinstance(rule_id, str) and _text(rule_id):
            by_id.setdefault(rule_id, []).append(rule)
    return [
        LintProblem(rule.file, rule.name, f"custom.id {rule_id!r} is also the id of {', '.join(_others(rule, same))}")
        for rule_id, same in by_id.items()
        if len(same) > 1
        for rule in same
    ]


def _others(rule: Rule, same: list[Rule]) -> list[str]:
    return [other.name for other in same if other is not rule]


def _example_problems(policy_dir: Path, rules: dict[str, Rule]) -> list[LintProblem]:
    examples = {path.stem: path for path in (policy_dir / "examples").glob("*.json")}
    problems = [
        LintProblem(f"examples/{name}.json", name, "no rule package consent.rules." + name)
        for name in sorted(set(examples) - set(rules))
    ]
    for rule in rules.values():
        path = examples.get(rule.name)
        if path is None:
            problems.append(LintProblem(rule.file, rule.name, f"no example examples/{rule.name}.json"))
            continue
        try:
            example = json.loads(path.read_text()).get(rule.name)
        except (ValueError, AttributeError) as error:
            problems.append(LintProblem(f"examples/{rule.name}.json", rule.name, f"not a JSON object: {error}"))
            continue
        rule_id = (rule.metadata.get("custom") or {}).get("id")
        expected_id = example.get("expected", {}).get("rule_id") if isinstance(example, dict) else None
        if expected_id != rule_id:
            problems.append(
                LintProblem(
                    f"examples/{rule.name}.json",
                    rule.name,
                    f"the expected violation's rule_id {expected_id!r} is not the rule's id {rule_id!r}",
                )
            )
    return problems


def _data_schema_problems(policy_dir: Path, inspected: dict) -> list[LintProblem]:
    problems = []
    for entry in inspected.get("annotations", []):
        for schema in entry["annotations"].get("schemas", []):
            segments = [segment["value"] for segment in schema.get("path", [])]
            if segments[:1] != ["data"] or "definition" not in schema:
                continue
            file, path = _clean(entry["location"]["file"]), ".".join(segments)
            mismatches = _schema_mismatches(schema["definition"], _bundle_data(policy_dir, segments[1:]), path)
            problems += [LintProblem(file, path, problem) for problem in mismatches]
    return problems


def _bundle_data(policy_dir: Path, segments: list[str]) -> dict:
    """The document the bundle's ``data.json`` files make at data.<segments>."""
    document: dict = {}
    root = policy_dir.joinpath(*segments)
    for path in sorted(root.rglob("data.json")):
        node = document
        for segment in path.parent.relative_to(root).parts:
            node = node.setdefault(segment, {})
        node.update(json.loads(path.read_text()))
    return document


def _schema_mismatches(schema: dict, data: object, path: str) -> list[str]:
    """Names a schema's closed objects list that the data lacks, or hold that the schema does not list."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not isinstance(data, dict):
        return []
    problems = [f"the schema names {path}.{name}, but there is no such data" for name in properties if name not in data]
    if schema.get("additionalProperties") is False:
        problems += [
            f"{path}.{name} is data the schema does not name: add it to the schema, or rules cannot read it"
            for name in data
            if name not in properties
        ]
    for name, subschema in properties.items():
        if name in data:
            problems += _schema_mismatches(subschema, data[name], f"{path}.{name}")
    return problems


def _dotted(path: list[dict]) -> str:
    return ".".join(segment["value"] for segment in path)


def _clean(file: str) -> str:
    return file.removeprefix("./")


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def main(argv: list[str] | None = None) -> int:
    """Print every problem of the directory; exit 0 when there is none, 1 when there are, 2 when OPA fails."""
    parser = argparse.ArgumentParser(prog="python -m airflow_consent.policy_lint", description=__doc__.splitlines()[0])
    parser.add_argument("policy_dir", type=Path, help="the policy directory (a copy of policies/)")
    parser.add_argument("--opa", help="the OPA binary (default: the pinned one, provisioned if need be)")
    args = parser.parse_args(argv)
    if not args.policy_dir.is_dir():
        parser.error(f"{args.policy_dir} is not a directory")
    if args.opa is None:
        from airflow_consent.engines.opa_binary import ensure_opa

        args.opa = ensure_opa(log=lambda line: print(line, file=sys.stderr))
    try:
        problems = lint(args.policy_dir, args.opa)
    except PolicyLintError as error:
        print(f"policy-lint: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"policy-lint: {problem}", file=sys.stderr)
    if problems:
        print(f"policy-lint: {len(problems)} problem(s) in {args.policy_dir}", file=sys.stderr)
        return 1
    print(f"policy-lint: {args.policy_dir}: no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
