"""``airflow-consent policy`` and ``airflow-consent reference``: the policy author's tools.

- ``policy check DIR``: the quality bar CI runs (``scripts/check-policies`` is this command);
- ``policy impact``: which partitions a policy change would deny or release, and by which rules;
- ``policy explain``: one partition's policy input and, for each violation, the rule that fired;
- ``policy bundle``: an OPA bundle of a policy directory with a revision, optionally signed;
- ``reference purposes|sources|licenses``: the valid values in the reference data.

Everything runs the pinned OPA binary over a policy directory, never a server, so an author can try
a copy before it ships. Cheap to import: the gate, pydantic and rich load when a command runs.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from airflow_consent.models import GateReport, GateRequest, PartitionInput
    from airflow_consent.run import GateSettings

app = typer.Typer(
    help="Tools for policy authors: check, compare, explain and bundle a policy directory.", no_args_is_help=True
)
reference_app = typer.Typer(
    help="Valid values from the policies' reference data (consent/reference/).", no_args_is_help=True
)

EXIT_FAILED = 1  # check: a check failed; impact: a decision changes
EXIT_BROKEN = 2
COVERAGE_THRESHOLD = 90.0
# Not in a bundle: Rego tests and the shared examples (examples/ and their helpers, consent/lib/examples/).
BUNDLE_IGNORE = ("*_test.rego", "examples")

PolicyDir = Annotated[
    Path,
    typer.Argument(
        help="a policy directory (policies/ or a copy)", metavar="DIR", exists=True, file_okay=False, show_default=False
    ),
]
PolicyPath = Annotated[
    Path | None,
    typer.Option(
        help="the policy directory; default: [consent] policy_path, else the shipped policies",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]
OpaBinary = Annotated[
    Path | None,
    typer.Option("--opa", help="the OPA binary; default: the pinned one, provisioned if need be", show_default=False),
]
Purpose = Annotated[str, typer.Option(help="purpose id from the taxonomy (airflow-consent reference purposes)")]
DatasetConfigPath = Annotated[
    str | None,
    typer.Option(help="directory of <dataset>.json evidence configurations; default: [consent] dataset_config_path"),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


# --- policy check ------------------------------------------------------------------------------


@app.command()
def check(
    directory: PolicyDir,
    schema: Annotated[
        Path | None,
        typer.Option(
            help="the input JSON Schema; default: the shipped schemas/input.json, generated from the models the "
            "gate builds its input with",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    coverage_threshold: Annotated[
        float,
        typer.Option(min=0, max=100, help="least test coverage of the policy files (test files excluded), percent"),
    ] = COVERAGE_THRESHOLD,
    opa: OpaBinary = None,
) -> None:
    """The quality bar, on any copy of the policies: opa fmt, opa check --strict against the input schema
    (as files and as a bundle), the METADATA and layout lint, opa test, and test coverage. Stops at the
    first failure. Exit 0 passes, 1 a check fails, 2 OPA cannot run."""
    from airflow_consent import policy_lint
    from airflow_consent.engines.opa_binary import binary_version
    from airflow_consent.policies import policy_dir

    root = Path(os.path.abspath(directory))
    schema = schema or policy_dir() / "schemas" / "input.json"
    binary = _opa_binary(opa)
    if (version := binary_version(binary)) is None:
        _broken(f"{binary} does not run as opa (opa version failed)")
    _step(f"{root} with OPA {version} at {binary}")

    _step("opa fmt")
    formatted = _opa(binary, "fmt", "--list", "--fail", str(root))
    if formatted.returncode != 0:
        _failed(formatted, f"not formatted (run: {binary} fmt -w {root})")

    _step(f"opa check --strict --schema {schema}")
    for loading in ([], ["--bundle"]):
        _require(_opa(binary, "check", "--strict", "--schema", str(schema), *loading, str(root)), "opa check failed")

    _step("METADATA and layout lint")
    if linted := policy_lint.main(["--opa", str(binary), str(root)]):
        raise typer.Exit(linted)

    _step(f"opa test --coverage (threshold {coverage_threshold:g}%)")
    tested = _opa(binary, "test", "--fail-on-empty", "--coverage", "--format", "json", str(root))
    if tested.returncode != 0:  # the coverage report says nothing of failed tests: run them for the reasons
        _failed(_opa(binary, "test", "--fail-on-empty", str(root)), "opa test failed")
    if not _coverage_passes(json.loads(tested.stdout), coverage_threshold):
        typer.echo(f"check-policies: coverage below {coverage_threshold:g}%", err=True)
        raise typer.Exit(EXIT_FAILED)
    _step(f"{root}: every check passed")


def _coverage_passes(report: dict, threshold: float) -> bool:
    """Print the coverage of the policy files alone (not OPA's --threshold, which counts the test files'
    own lines as covered policy) and each line not covered; True when it reaches the threshold."""
    policies = {name: f for name, f in report["files"].items() if not name.endswith("_test.rego")}
    covered = sum(f.get("covered_lines", 0) for f in policies.values())
    lines = covered + sum(f.get("not_covered_lines", 0) for f in policies.values())
    percent = 100.0 * covered / lines if lines else 0.0
    _step(
        f"coverage {percent:.2f}% of {lines} policy lines ({report['coverage']:.2f}% including tests), "
        f"threshold {threshold:g}%"
    )
    for name, f in sorted(policies.items()):
        for start, end in sorted({(span["start"]["row"], span["end"]["row"]) for span in f.get("not_covered", [])}):
            typer.echo(f"  not covered: {name}:{start}" + (f"-{end}" if end != start else ""))
    return percent >= threshold


def _step(text: str) -> None:
    typer.echo(f"check-policies: {text}")


def _require(done: subprocess.CompletedProcess, problem: str) -> None:
    if done.returncode != 0:
        _failed(done, problem)


def _failed(done: subprocess.CompletedProcess, problem: str) -> NoReturn:
    for stream in (done.stdout, done.stderr):
        if stream.strip():
            typer.echo(stream.rstrip(), err=True)
    typer.echo(f"check-policies: {problem}", err=True)
    raise typer.Exit(EXIT_FAILED)


# --- policy impact -----------------------------------------------------------------------------


@app.command()
def impact(
    datasets: Annotated[list[str], typer.Argument(help="dataset URIs (hive-partitioned)", show_default=False)],
    base: Annotated[Path, typer.Option(help="the policies in force", exists=True, file_okay=False)],
    new: Annotated[Path, typer.Option(help="the changed policies", exists=True, file_okay=False)],
    purpose: Purpose,
    where: Annotated[list[str], typer.Option("--where", help="partition filter KEY=VALUE (repeat to AND)")] = [],  # noqa: B006
    dataset_config_path: DatasetConfigPath = None,
    as_json: AsJson = False,
) -> None:
    """Decide the same partitions under the --base and the --new policies (nothing is recorded) and print
    every partition whose verdict or violated rules change, the rules added and removed, and totals.
    Exit 0 when nothing changes, 1 when something does (gate a policy change in CI), 2 on an error."""
    from airflow_consent.cli import _equality
    from airflow_consent.errors import ConsentError
    from airflow_consent.run import progress_log, run_gate

    partition_filter = [_equality(term) for term in where] or None
    request = _request(purpose, "airflow-consent policy impact")
    reports = {}
    try:
        for side, directory in (("base", base), ("new", new)):
            gate = _local_gate(directory, dataset_config_path)
            reports[side] = run_gate(
                request,
                gate.specs([(uri, None) for uri in datasets]),
                gate,
                partition_filter=partition_filter,
                record=False,
                logger=progress_log(as_json),
            )
    except ConsentError as exc:
        _broken(str(exc))
    if reports["base"].input_digest != reports["new"].input_digest:
        _broken("the data changed between the two evaluations (the policy inputs differ): run it again")
    found = _impact(reports["base"], reports["new"])
    found["policies"] = {
        side: {"path": str(path), "revision": reports[side].policy_revision}
        for side, path in (("base", base), ("new", new))
    }
    typer.echo(json.dumps(found, indent=2) if as_json else _impact_text(found))
    raise typer.Exit(EXIT_FAILED if found["changes"] else 0)


def _impact(base: GateReport, new: GateReport) -> dict:
    """The partitions whose verdict or rule ids differ between the two reports, per-rule counts, totals."""
    new_by_id = {p.id: p for p in new.partitions}
    changes: list[dict] = []
    rules: dict[str, dict[str, int]] = {}
    for before in base.partitions:
        after = new_by_id[before.id]
        was, now = {v.rule_id for v in before.violations}, {v.rule_id for v in after.violations}
        if before.allow == after.allow and was == now:
            continue
        added, removed = sorted(now - was), sorted(was - now)
        changes.append(
            {
                "id": before.id,
                "uri": before.uri,
                "base_allow": before.allow,
                "new_allow": after.allow,
                "added": added,
                "removed": removed,
            }
        )
        for key, rule_ids in (("added", added), ("removed", removed)):
            for rule_id in rule_ids:
                rules.setdefault(rule_id, {"added": 0, "removed": 0})[key] += 1
    verdicts = [(c["base_allow"], c["new_allow"]) for c in changes]
    totals = {
        "partitions": len(base.partitions),
        "newly_denied": verdicts.count((True, False)),
        "newly_allowed": verdicts.count((False, True)),
        "other_rules": sum(was_allowed == now_allowed for was_allowed, now_allowed in verdicts),
        "unchanged": len(base.partitions) - len(changes),
        "base_denied": len(base.denied),
        "new_denied": len(new.denied),
    }
    return {"purpose": base.purpose, "changes": changes, "rules": dict(sorted(rules.items())), "totals": totals}


def _impact_text(found: dict) -> str:
    totals = found["totals"]
    lines = [f"Policy impact for purpose {found['purpose']!r} on {totals['partitions']} partition(s)"]
    for side in ("base", "new"):
        policies = found["policies"][side]
        lines.append(
            f"  {side:<4} {policies['path']} (policies {policies['revision']}): {totals[side + '_denied']} denied"
        )
    for change in found["changes"]:
        label = (
            "STILL DENIED"
            if change["base_allow"] == change["new_allow"]
            else "NOW ALLOWED"
            if change["new_allow"]
            else "NOW DENIED"
        )
        rules = [f"+{r}" for r in change["added"]] + [f"-{r}" for r in change["removed"]]
        lines.append(f"  {label:<12} {change['id']}  {' '.join(rules)}")
    if found["rules"]:
        lines.append("by rule (partitions it now denies / no longer denies):")
        lines += [f"  {rule_id}: +{n['added']} -{n['removed']}" for rule_id, n in found["rules"].items()]
    lines.append(
        f"{totals['newly_denied']} newly denied, {totals['newly_allowed']} newly allowed, "
        f"{totals['other_rules']} denied by other rules, {totals['unchanged']} unchanged"
    )
    return "\n".join(lines)


# --- policy explain ----------------------------------------------------------------------------


@app.command()
def explain(
    partition_uri: Annotated[
        str, typer.Argument(help="a partition directory: <dataset URI>/<key>=<value>/...", show_default=False)
    ],
    purpose: Purpose,
    policy_path: PolicyPath = None,
    dataset_config_path: DatasetConfigPath = None,
    as_json: AsJson = False,
) -> None:
    """One partition's policy input (request, manifest, evidence) and, for each violation, the rule that
    fired: its METADATA and its Rego source. Evaluated by the local OPA over the policy directory;
    nothing is recorded. Exit 0 allowed, 1 denied, 2 on an error."""
    from airflow_consent.errors import ConsentError
    from airflow_consent.gate import collect_partitions
    from airflow_consent.policies import policy_dir
    from airflow_consent.run import progress_log, run_gate

    request = _request(purpose, "airflow-consent policy explain")
    try:
        gate = _local_gate(policy_path, dataset_config_path)
        root = Path(gate.policy_path or policy_dir())
        specs, keys = _partition_spec(partition_uri, gate)
        partition_filter = [(key, "=", value) for key, value in keys.items()]
        [partition] = collect_partitions(specs, partition_filter=partition_filter, logger=progress_log(True))
        [decided] = run_gate(
            request, specs, gate, partition_filter=partition_filter, record=False, logger=progress_log(as_json)
        ).partitions
        rules = _fired_rules(root, [v.rule_id for v in decided.violations])
    except ConsentError as exc:
        _broken(str(exc))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "request": request.model_dump(mode="json"),
                    "partition": partition.model_dump(mode="json"),
                    "decision": decided.model_dump(mode="json"),
                    "rules": rules,
                },
                indent=2,
            )
        )
    else:
        lines = [
            f"{'ALLOW' if decided.allow else 'DENY'} {decided.id} for purpose {purpose!r} (policies {root})",
            "",
            "Policy input (the fields that are set; --json for all of it):",
        ]
        lines += [f"  {key}: {value}" for key, value in _fields(request, partition)]
        lines += ["", f"Violations: {len(decided.violations)}"]
        for violation in decided.violations:
            lines += _rule_lines(violation.rule_id, violation.message, violation.enforcement, rules[violation.rule_id])
        typer.echo("\n".join(lines))
    raise typer.Exit(0 if decided.allow else EXIT_FAILED)


def _partition_spec(partition_uri: str, gate: GateSettings) -> tuple[list, dict[str, str]]:
    """The dataset of a partition directory (the URI without its trailing key=value segments) and the
    partition's decoded keys, as discovery reads them."""
    from airflow_consent.discovery import discover_partitions
    from airflow_consent.errors import NoPartitionsFound

    segments = partition_uri.rstrip("/").split("/")
    depth = next((n for n in range(len(segments)) if "=" not in segments[-1 - n]), len(segments))
    if depth == 0 or depth == len(segments):
        raise typer.BadParameter(
            f"{partition_uri!r} is not <dataset URI>/<key>=<value>/...", param_hint="PARTITION_URI"
        )
    [spec] = gate.specs([("/".join(segments[:-depth]), None)])
    wanted = os.path.abspath(partition_uri) if "://" not in partition_uri else partition_uri.rstrip("/")
    for found in discover_partitions(spec.uri):
        if found.uri == wanted:
            return [spec], found.keys
    raise NoPartitionsFound(f"no partition of the dataset at {spec.uri} is at {partition_uri}")


def _fields(request: GateRequest, partition: PartitionInput) -> list[tuple[str, str]]:
    """Dotted path → value of every field that is set, request first; lists of scalars on one line."""
    request_fields = {key: request.model_dump(mode="json")[key] for key in ("purpose", "model", "evaluated_at")}
    return [*_flat("request", request_fields), *_flat("", partition.model_dump(mode="json", exclude={"keys"}))]


def _flat(prefix: str, value: object) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _flat(f"{prefix}.{key}".lstrip("."), item)]
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return [pair for n, item in enumerate(value) for pair in _flat(f"{prefix}[{n}]", item)]
    if value is None or value == [] or value == {}:
        return []
    return [(prefix, ", ".join(map(str, value)) if isinstance(value, list) else str(value))]


def _fired_rules(root: Path, rule_ids: list[str]) -> dict[str, dict]:
    """Rule id → the rule package that reports it: its METADATA, file and ``violation`` definitions
    (start and end line, source) as ``opa parse`` locates them, and the file's other rules."""
    from airflow_consent import policy_lint

    binary = _opa_binary(None)
    by_id = {
        (rule.metadata.get("custom") or {}).get("id") or f"consent.rules.{rule.name}": rule
        for rule in policy_lint.rule_metadata(root, binary).values()
    }
    fired: dict[str, dict] = {}
    for rule_id in dict.fromkeys(rule_ids):
        if (rule := by_id.get(rule_id)) is None:
            fired[rule_id] = {"package": None, "file": None, "metadata": {}, "definitions": [], "helpers": []}
            continue
        parsed = _opa(binary, "parse", "--format", "json", "--json-include", "locations,-comments", rule.file, cwd=root)
        definitions: list[dict] = []
        helpers: list[dict] = []
        for entry in json.loads(parsed.stdout).get("rules", []) if parsed.returncode == 0 else []:
            location = entry["location"]
            source = base64.b64decode(location.get("text", "")).decode()
            if entry["head"].get("name") == "violation":
                definitions.append(
                    {"start": location["row"], "end": location["row"] + source.count("\n"), "source": source}
                )
            else:
                helpers.append({"name": entry["head"].get("name"), "line": location["row"]})
        fired[rule_id] = {
            "package": f"consent.rules.{rule.name}",
            "file": str(root / rule.file),
            "metadata": rule.metadata,
            "definitions": definitions,
            "helpers": helpers,
        }
    return fired


def _rule_lines(rule_id: str, message: str, enforcement: str, rule: dict) -> list[str]:
    metadata, custom = rule["metadata"], rule["metadata"].get("custom") or {}
    mode = "" if enforcement == "deny" else f", {enforcement}: not enforced"
    recoverable = "recoverable" if custom.get("recoverable") else "not recoverable"
    lines = [
        "",
        f"  {rule_id} {metadata.get('title', '(no METADATA title)')} ({custom.get('severity', '?')}, "
        + f"{recoverable}{mode})",
        f"    message: {message}",
    ]
    for label, text in (
        ("what", metadata.get("description")),
        ("fix", custom.get("remediation")),
        ("see", "; ".join(custom.get("regulation") or [])),
    ):
        if text:
            lines.append(f"    {label}: {' '.join(str(text).split())}")
    if rule["package"] is None:
        return [*lines, f"    rule: no rule package has the id {rule_id}"]
    for definition in rule["definitions"]:
        lines.append(
            f"    rule: {rule['package']}.violation at {rule['file']}:{definition['start']}-{definition['end']}"
        )
        lines += [
            f"      {definition['start'] + n:>4}  {text}"
            for n, text in enumerate(definition["source"].expandtabs(4).splitlines())
        ]
    if rule["helpers"]:
        lines.append(
            "    helpers in that file: " + ", ".join(f"{h['name']} (line {h['line']})" for h in rule["helpers"])
        )
    return lines


# --- policy bundle -----------------------------------------------------------------------------


@app.command()
def bundle(
    directory: PolicyDir,
    output: Annotated[Path, typer.Option("--output", "-o", help="the bundle file to write", dir_okay=False)],
    revision: Annotated[
        str | None,
        typer.Option(
            help="the bundle's revision; default: the policy revision the local engine reports for DIR "
            '(a git revision instead: --revision "$(git describe --always --dirty)")',
            show_default=False,
        ),
    ] = None,
    signing_key: Annotated[
        str | None,
        typer.Option(
            help="sign the bundle: a PEM private key file (RSA or ECDSA), or the HMAC secret", show_default=False
        ),
    ] = None,
    signing_alg: Annotated[
        str | None,
        typer.Option(help="the signing algorithm (OPA's default: RS256; ES256, HS256, ...)", show_default=False),
    ] = None,
    opa: OpaBinary = None,
) -> None:
    """Build an OPA bundle (opa build -b) of DIR for OPA servers: its policies and data.json reference data,
    without tests (*_test.rego) or examples, with a revision in its .manifest. A server's decisions carry
    the revision (provenance.bundles.<name>.revision), and gate reports name it.

    Signed bundles: build with --signing-key private_key.pem (--signing-alg for other than RS256), and
    start the servers with `opa run --server --bundle bundle.tar.gz --verification-key public_key.pem`
    (or bundles.<name>.signing.keyid in their configuration): they refuse an unsigned or altered bundle."""
    import tarfile

    from airflow_consent.policies import policy_revision

    root = Path(os.path.abspath(directory))
    revision = revision or policy_revision(root)
    target = Path(os.path.abspath(output))
    signing = [
        *(["--signing-key", signing_key] if signing_key else []),
        *(["--signing-alg", signing_alg] if signing_alg else []),
    ]
    ignored = [argument for pattern in BUNDLE_IGNORE for argument in ("--ignore", pattern)]
    built = _opa(
        _opa_binary(opa),
        "build",
        "--bundle",
        ".",
        *ignored,
        "--revision",
        revision,
        *signing,
        "--output",
        str(target),
        cwd=root,
    )
    if built.returncode != 0:
        _broken(f"opa build failed: {(built.stderr or built.stdout).strip()}")
    with tarfile.open(target) as archive:
        names = archive.getnames()
    policies = sum(name.endswith(".rego") for name in names)
    signed = "signed" if any(name.endswith(".signatures.json") for name in names) else "unsigned"
    typer.echo(f"{target}: revision {revision}, {policies} policy file(s), {signed}")


# --- reference ---------------------------------------------------------------------------------


@reference_app.command()
def purposes(policy_path: PolicyPath = None, as_json: AsJson = False) -> None:
    """The purpose taxonomy: each purpose with its parent and kinds. Consent, agreements and licenses granted
    for a purpose cover its descendants."""
    taxonomy = _reference(policy_path, "purposes")
    if as_json:
        return typer.echo(json.dumps(taxonomy, indent=2))
    table = _table(f"{len(taxonomy)} purposes", "purpose", "kinds", "title")
    children: dict[str | None, list[str]] = {}
    for purpose_id, entry in taxonomy.items():  # a parent not in the taxonomy: listed as a root
        children.setdefault(entry.get("parent") if entry.get("parent") in taxonomy else None, []).append(purpose_id)
    pending, listed = [(purpose_id, 0) for purpose_id in reversed(children.get(None, []))], set()
    while pending:  # depth first from the roots, a child indented under its parent
        purpose_id, depth = pending.pop()
        if purpose_id in listed:
            continue
        listed.add(purpose_id)
        entry = taxonomy[purpose_id]
        kinds = [kind for kind in ("commercial", "biometric", "model_training") if entry.get(kind) is True]
        table.add_row("  " * depth + purpose_id, ", ".join(kinds) or "-", entry.get("title", ""))
        pending += [(child, depth + 1) for child in reversed(children.get(purpose_id, []))]
    _print(table)


@reference_app.command()
def sources(policy_path: PolicyPath = None, as_json: AsJson = False) -> None:
    """The approved sources and their data-sharing agreements (a third-party source needs one covering the
    purpose)."""
    approved = _reference(policy_path, "sources")
    if as_json:
        return typer.echo(json.dumps(approved, indent=2))
    table = _table(f"{len(approved)} approved sources", "source", "party", "agreement", "purposes", "expires")
    for source_id, entry in approved.items():
        agreements = list((entry.get("agreements") or {}).items()) or [("-", {})]
        for n, (agreement_id, agreement) in enumerate(agreements):
            table.add_row(
                source_id if n == 0 else "",
                entry.get("party", "") if n == 0 else "",
                agreement_id,
                ", ".join(agreement.get("purposes", [])),
                agreement.get("expires_at", ""),
            )
    _print(table)


@reference_app.command()
def licenses(
    policy_path: PolicyPath = None,
    family: Annotated[str | None, typer.Option(help="only this family (cc-by-nc, unclassified, ...)")] = None,
    match: Annotated[str | None, typer.Option(help="only ids or titles containing this text")] = None,
    as_json: AsJson = False,
) -> None:
    """The licenses and terms a manifest may name: the SPDX licenses (licenses) and the organisation's
    own terms and classifications (license_terms, which win over an SPDX entry of the same id)."""
    merged = {
        license_id: {**entry, "defined_in": "licenses"}
        for license_id, entry in _reference(policy_path, "licenses").items()
    }
    merged.update(
        {
            license_id: {**entry, "defined_in": "license_terms"}
            for license_id, entry in _reference(policy_path, "license_terms").items()
        }
    )
    selected = {
        license_id: entry
        for license_id, entry in sorted(merged.items(), key=lambda item: item[0].lower())
        if (family is None or entry.get("family") == family)
        and (match is None or match.lower() in f"{license_id} {entry.get('title', '')}".lower())
    }
    if as_json:
        return typer.echo(json.dumps(selected, indent=2))
    table = _table(
        f"{len(selected)} of {len(merged)} licenses (from: SPDX licenses, or the organisation's license_terms)",
        "license",
        "from",
        "family",
        "commercial",
        "purposes",
        "title",
    )
    for license_id, entry in selected.items():
        permitted = entry.get("purposes", [])
        table.add_row(
            license_id + (" (deprecated)" if entry.get("deprecated") else ""),
            "terms" if entry["defined_in"] == "license_terms" else "SPDX",
            entry.get("family", ""),
            _yes(entry.get("commercial")),
            "any" if permitted is None else ", ".join(permitted) or "none",
            entry.get("title", ""),
        )
    _print(table)


def _reference(policy_path: Path | None, name: str) -> dict:
    """``data.consent.reference.<name>.<name>`` of the policy directory (default: [consent] policy_path, else
    the shipped policies)."""
    from airflow_consent.config import settings
    from airflow_consent.policies import policy_dir

    root = Path(policy_path or settings().policy_path or policy_dir())
    path = root / "consent" / "reference" / name / "data.json"
    try:
        return json.loads(path.read_text())[name]
    except (OSError, ValueError, KeyError) as exc:
        _broken(f"cannot read the reference data {name!r} from {path}: {exc!r}")


def _table(title: str, *columns: str):
    """A table of ``columns``, the first (the ids) never wrapped."""
    from rich.table import Table

    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column(columns[0], no_wrap=True)
    for column in columns[1:]:
        table.add_column(column, overflow="fold")
    return table


def _print(table) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a file or a pipe: no terminal to fit, so fold less
        console = Console(width=max(console.width, 120))
    console.print(table)


def _yes(value: object) -> str:
    return "yes" if value is True else "no" if value is False else "-"


# --- shared ------------------------------------------------------------------------------------


def _request(purpose: str, tool: str) -> GateRequest:
    from datetime import UTC, datetime

    from airflow_consent.models import GateRequest, Requester

    return GateRequest(purpose=purpose, requested_by=Requester(kind="cli", id=tool), evaluated_at=datetime.now(UTC))


def _local_gate(policy_path: Path | None, dataset_config_path: str | None) -> GateSettings:
    """A gate's settings under this process's [consent], with the local OPA over ``policy_path`` (default:
    [consent] policy_path, else the shipped policies), never a server: the author's directory is judged."""
    import dataclasses

    from airflow_consent.config import settings
    from airflow_consent.run import GateArguments, resolve

    config = dataclasses.replace(settings(), pinned_task_arguments=())
    arguments = GateArguments(
        policy_path=str(policy_path) if policy_path else None, dataset_config_path=dataset_config_path
    )
    return dataclasses.replace(resolve(arguments, config), opa_conn_id=None)


def _opa_binary(explicit: Path | None) -> Path:
    if explicit:
        return explicit
    from airflow_consent.engines.opa_binary import ensure_opa
    from airflow_consent.errors import OpaProvisioningError

    try:
        return ensure_opa(log=lambda line: typer.echo(line, err=True))
    except OpaProvisioningError as exc:
        _broken(str(exc))


def _opa(binary: Path, *arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(binary), *arguments], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _broken(f"cannot run {binary}: {exc}")


def _broken(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BROKEN)


if __name__ == "__main__":  # scripts/check-policies: python -m airflow_consent.policy_cli check DIR
    app(prog_name="airflow-consent policy")
