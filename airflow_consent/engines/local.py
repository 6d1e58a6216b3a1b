"""The zero-setup engine: the shipped policies evaluated by a local ``opa`` binary."""

from __future__ import annotations

import asyncio
import json
import subprocess
from functools import cached_property
from pathlib import Path

from airflow_consent.engines import EngineAnswer, describe_opa_errors
from airflow_consent.engines.opa_binary import binary_version, ensure_opa
from airflow_consent.errors import (
    EngineTimeout,
    EngineUnreachable,
    MalformedDecision,
    OpaProvisioningError,
    PolicyError,
    UndefinedDecision,
)
from airflow_consent.policies import policy_dir, policy_revision


class LocalOpaEngine:
    """Runs ``opa eval --bundle <policies> --stdin-input --strict-builtin-errors`` once per evaluation."""

    def __init__(
        self, *, policy_path: Path | str | None = None, opa_binary: Path | str | None = None, timeout: float = 120.0
    ):
        self.policy_path = Path(policy_path) if policy_path else policy_dir()
        self._opa_binary = Path(opa_binary) if opa_binary else None
        self.timeout = timeout
        self.name = f"local opa ({self.policy_path})"

    @cached_property
    def opa_binary(self) -> Path:
        if self._opa_binary:
            return self._opa_binary
        try:
            return ensure_opa()
        except OpaProvisioningError as exc:
            raise EngineUnreachable(str(exc), engine=self.name) from exc

    @cached_property
    def opa_version(self) -> str | None:
        return binary_version(self.opa_binary)

    def evaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer:
        command, query = self._command(entrypoint)
        try:
            done = subprocess.run(
                command, input=json.dumps(policy_input), capture_output=True, text=True, timeout=self.timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineTimeout(f"opa eval did not answer within {self.timeout:g} s", engine=self.name) from exc
        except OSError as exc:
            raise EngineUnreachable(f"cannot run {self.opa_binary}: {exc}", engine=self.name) from exc
        return self._answer(query, done.returncode, done.stdout, done.stderr)

    async def aevaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer:
        """``evaluate`` without blocking the event loop (for the triggerer): the JSON is written and
        read in a worker thread."""
        command, query = self._command(entrypoint)
        document = await asyncio.to_thread(json.dumps, policy_input)
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise EngineUnreachable(f"cannot run {self.opa_binary}: {exc}", engine=self.name) from exc
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(document.encode()), self.timeout)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise EngineTimeout(f"opa eval did not answer within {self.timeout:g} s", engine=self.name) from exc
        return await asyncio.to_thread(self._answer, query, process.returncode, stdout.decode(), stderr.decode())

    def _command(self, entrypoint: str) -> tuple[list[str], str]:
        query = "data." + entrypoint.strip("/").replace("/", ".")
        return [
            str(self.opa_binary),
            "eval",
            "--bundle",
            str(self.policy_path),
            "--stdin-input",
            "--format",
            "json",
            "--strict-builtin-errors",
            query,
        ], query

    def _answer(self, query: str, returncode: int | None, stdout: str, stderr: str) -> EngineAnswer:
        if returncode != 0:
            raise PolicyError(_describe_errors(stdout, stderr), engine=self.name)
        try:
            output = json.loads(stdout)
        except json.JSONDecodeError as exc:
            raise MalformedDecision(f"opa eval printed no JSON: {stdout[:500]!r}", engine=self.name) from exc
        if isinstance(output, dict) and "result" not in output:  # opa eval prints {} when undefined
            raise UndefinedDecision(f"{query} is undefined for this input: is the entrypoint right?", engine=self.name)
        try:
            [result] = output["result"]
            [expression] = result["expressions"]
            value = expression["value"]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedDecision(
                f"opa eval's answer is not one result of one expression with a value: {stdout[:500]!r}",
                engine=self.name,
            ) from exc
        return EngineAnswer(
            result=value,
            opa_version=self.opa_version,
            policy_revision=policy_revision(self.policy_path),
        )


def _describe_errors(stdout: str, stderr: str) -> str:
    try:
        errors = json.loads(stdout).get("errors", [])
    except (json.JSONDecodeError, AttributeError):
        errors = []
    return describe_opa_errors(errors) or (stderr or stdout).strip()[:2000]
