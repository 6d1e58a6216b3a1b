"""Partitions go to OPA in chunks: the same decisions and the same input digest as one query.

The engine is the real local OPA over the shipped policies; ``Counting`` only watches what goes in
and out of it, and ``NewRevisionAfterFirst`` stands in for a bundle that is replaced mid-evaluation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import operator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_consent.engines import EngineAnswer
from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import ConsentConfigurationError, MalformedDecision
from airflow_consent.gate import DatasetSpec, aevaluate_gate, collect_partitions, evaluate_gate
from airflow_consent.ledger import input_digest
from airflow_consent.models import GateRequest
from airflow_consent.sample_data import generate_profile_photos

REQUEST = GateRequest(
    purpose="face_recognition_training", dag_id="train", run_id="r1", evaluated_at=datetime(2026, 12, 1, tzinfo=UTC)
)


class Counting:
    """The real engine, with each query's partition ids kept."""

    def __init__(self, engine):
        self.engine, self.name, self.queries = engine, engine.name, []

    def evaluate(self, document: dict, entrypoint: str) -> EngineAnswer:
        self.queries.append([p["id"] for p in document["partitions"]])
        return self.engine.evaluate(document, entrypoint)

    async def aevaluate(self, document: dict, entrypoint: str) -> EngineAnswer:
        self.queries.append([p["id"] for p in document["partitions"]])
        return await self.engine.aevaluate(document, entrypoint)


class NewRevisionAfterFirst(Counting):
    def evaluate(self, document: dict, entrypoint: str) -> EngineAnswer:
        answer = super().evaluate(document, entrypoint)
        return dataclasses.replace(answer, policy_revision="sha256:new") if len(self.queries) > 1 else answer


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> list[DatasetSpec]:
    """Two datasets, 7 partitions in all, some allowed and some denied."""
    root = tmp_path_factory.mktemp("chunks")
    photos = generate_profile_photos(root / "a")
    more = generate_profile_photos(root / "b", sources=("studio_optin",))
    renamed = more.with_name("more_photos")
    more.rename(renamed)
    return [DatasetSpec(uri=str(photos)), DatasetSpec(uri=str(renamed))]


def verdicts(report) -> list[tuple[str, bool, list[str]]]:
    return [(p.id, p.allow, sorted(v.rule_id for v in p.violations)) for p in report.partitions]


def test_any_chunking_gives_the_decisions_and_digest_of_one_query(datasets, opa_binary):
    whole = Counting(LocalOpaEngine(opa_binary=opa_binary))
    one_query = evaluate_gate(REQUEST, datasets, whole, chunk_size=10_000)
    partitions = collect_partitions(datasets)
    assert whole.queries == [[p.id for p in partitions]]
    assert {allow for _, allow, _ in verdicts(one_query)} == {True, False}
    assert one_query.input_digest == input_digest(
        {"request": REQUEST.model_dump(mode="json"), "partitions": [p.model_dump(mode="json") for p in partitions]}
    )

    for size in (1, 2, 3, len(partitions) - 1, len(partitions)):
        chunked = Counting(LocalOpaEngine(opa_binary=opa_binary))
        report = evaluate_gate(REQUEST, datasets, chunked, chunk_size=size)
        assert [len(q) for q in chunked.queries] == [
            min(size, len(partitions) - i) for i in range(0, len(partitions), size)
        ]
        assert functools.reduce(operator.iadd, chunked.queries, []) == [
            p.id for p in partitions
        ]  # in order, each once, across datasets
        assert verdicts(report) == verdicts(one_query)
        assert (report.allow, report.input_digest) == (one_query.allow, one_query.input_digest)
        assert (report.opa_version, report.policy_revision) == (one_query.opa_version, one_query.policy_revision)


def test_the_deferred_path_chunks_alike(datasets, opa_binary):
    engine = Counting(LocalOpaEngine(opa_binary=opa_binary))
    report = asyncio.run(aevaluate_gate(REQUEST, datasets, engine, chunk_size=3))
    expected = evaluate_gate(REQUEST, datasets, LocalOpaEngine(opa_binary=opa_binary))
    assert [len(q) for q in engine.queries] == [3, 3, 1]
    assert verdicts(report) == verdicts(expected) and report.input_digest == expected.input_digest


def test_policies_replaced_between_chunks_fail_closed(datasets, opa_binary):
    engine = NewRevisionAfterFirst(LocalOpaEngine(opa_binary=opa_binary))
    with pytest.raises(
        MalformedDecision,
        match="the policies changed during the evaluation: query 1 was decided by "
        r"OPA .* revision sha256:\w+, query 2 by OPA .* revision sha256:new; run the gate again",
    ):
        evaluate_gate(REQUEST, datasets, engine, chunk_size=4)


def test_a_dataset_given_twice_is_refused_before_any_query(datasets, opa_binary):
    engine = Counting(LocalOpaEngine(opa_binary=opa_binary))
    with pytest.raises(ConsentConfigurationError, match="partitions listed twice"):
        evaluate_gate(REQUEST, [*datasets, datasets[0]], engine, chunk_size=1)
    assert engine.queries == []


@pytest.mark.parametrize("size", [0, -5])
def test_a_chunk_size_below_one_is_a_configuration_error(datasets, size):
    with pytest.raises(ConsentConfigurationError, match=f"at least 1 partition, not {size}"):
        evaluate_gate(REQUEST, datasets, LocalOpaEngine(), chunk_size=size)


def test_collect_partitions_is_every_chunk_in_order(datasets):
    ids = [p.id for p in collect_partitions(datasets)]
    assert len(ids) == 7 and len(set(ids)) == 7
    assert [Path(i).parts[0] for i in ids] == ["profile_photos"] * 5 + ["more_photos"] * 2


@pytest.mark.parametrize(("value", "expected"), [("2000", 2000), ("0", None), ("many", None), ("-1", None)])
def test_query_chunk_size_is_a_deployment_setting(monkeypatch, value, expected):
    from airflow_consent.config import settings

    monkeypatch.setenv("AIRFLOW__CONSENT__QUERY_CHUNK_SIZE", value)
    if expected is None:
        with pytest.raises(
            ConsentConfigurationError, match=f"query_chunk_size must be a whole number of at least 1, not '{value}'"
        ):
            settings()
    else:
        assert settings().query_chunk_size == expected
