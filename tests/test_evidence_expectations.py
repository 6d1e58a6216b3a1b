"""Great Expectations suites per partition: results in the policy input, bad suites, and the cost of importing GX."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from evidence_data import DATASET, config, rows, write_config, write_partition

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.gate import DatasetSpec, collect_partitions
from airflow_consent.models import EvidenceProblem, ExpectationResults, FailedExpectation

NOT_NULL_ID = "0d6f3c1a-8e4b-4f7a-b2c9-3e5d7a9f1b20"
SUITE = {
    "name": "faces",
    "expectations": [
        {"id": NOT_NULL_ID, "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "consent_face"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "photo_id"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "subject_id", "regex": "^s[0-9]+$"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 3}},
    ],
}


def collect(data: Path, conf: Path) -> dict:
    specs = [DatasetSpec(uri=str(data / DATASET), dataset_config_path=str(conf))]
    return {p.id.rsplit("=", 1)[1]: (p.evidence, p.evidence_problems) for p in collect_partitions(specs)}


def test_suite_results_are_in_the_evidence_with_critical_failures_marked(tmp_path):
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "good", rows(["s1", "s2"]))
    write_partition(data, "bad", rows(["s1", "alice@example.com", "s3", "s4"], face=[True, None, True, True]))
    write_config(
        conf,
        config(expectations={"critical": [NOT_NULL_ID, "expect_column_values_to_match_regex"]}),
        revoked=[],
        suite=SUITE,
    )

    collected = collect(data, conf)

    good, good_problems = collected["good"]
    assert good_problems == []
    assert good.expectations == ExpectationResults(
        suite="faces",
        source=str(conf / f"{DATASET}.expectations.json"),
        success=True,
        evaluated=4,
        successful=4,
    )
    bad, bad_problems = collected["bad"]
    assert bad_problems == []
    assert bad.expectations.model_dump() == {
        "suite": "faces",
        "source": str(conf / f"{DATASET}.expectations.json"),
        "success": False,
        "evaluated": 4,
        "successful": 1,
        "failed": [
            FailedExpectation(
                type="expect_column_values_to_match_regex",
                id=None,
                column="subject_id",
                critical=True,
                statistics={
                    "element_count": 4,
                    "missing_count": 0,
                    "missing_percent": 0.0,
                    "unexpected_count": 1,
                    "unexpected_percent": 25.0,
                    "unexpected_percent_nonmissing": 25.0,
                    "unexpected_percent_total": 25.0,
                },
            ).model_dump(),
            FailedExpectation(
                type="expect_column_values_to_not_be_null",
                id=NOT_NULL_ID,
                column="consent_face",
                critical=True,
                statistics={"element_count": 4, "unexpected_count": 1, "unexpected_percent": 25.0},
            ).model_dump(),
            FailedExpectation(
                type="expect_table_row_count_to_be_between",
                id=None,
                column=None,
                critical=False,
                statistics={"observed_value": 4},
            ).model_dump(),
        ],
    }
    assert "alice@example.com" not in bad.model_dump_json()  # raw values stay out of the policy input


def test_an_expectation_that_cannot_run_is_a_problem(tmp_path):
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "a", rows(["s1"]))
    suite = {
        "name": "faces",
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "age"}}],
    }
    write_config(conf, config(expectations={}), revoked=[], suite=suite)

    evidence, problems = collect(data, conf)["a"]

    assert evidence.content is None and evidence.expectations is None
    assert problems == [
        EvidenceProblem(
            file=f"{data / DATASET}/shard=a",
            field="expect_column_values_to_not_be_null(column='age')",
            message=f"expectation of suite {conf / f'{DATASET}.expectations.json'} could not run: "
            'Error: The column "age" in BatchData does not exist.',
        )
    ]


def test_a_column_missing_from_one_file_only_is_named(tmp_path):
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "a", rows(["s1"]), rows(["s2"]).drop_columns(["photo_id"]))
    write_config(conf, config(expectations={}), revoked=[], suite=SUITE)

    assert collect(data, conf)["a"][1] == [
        EvidenceProblem(
            file=f"{data / DATASET}/shard=a/part-1.parquet",
            field="photo_id",
            message=f"column 'photo_id', used by suite {conf / f'{DATASET}.expectations.json'}, is missing from this "
            "file but not from others",
        )
    ]


@pytest.mark.parametrize(
    ("suite", "critical", "message"),
    [
        (
            {"name": "x", "expectations": [{"type": "expect_the_moon", "kwargs": {}}]},
            [],
            r"expectations\[0\] \(expect_the_moon\): invalid expectation",
        ),
        (
            {"name": "x", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {}}]},
            [],
            r"expectations\[0\] \(expect_column_values_to_not_be_null\): invalid expectation: .*column",
        ),
        ({"expectations": []}, [], "name: the suite needs a non-empty name"),
        ([], [], "not an expectation suite"),
        (
            SUITE,
            ["expect_column_values_to_be_null"],
            r"expectations.critical names \['expect_column_values_to_be_null'\]",
        ),
    ],
)
def test_bad_suite_stops_the_gate_naming_the_file(tmp_path, suite, critical, message):
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "a", rows(["s1"]))
    write_config(conf, config(expectations={"critical": critical}), revoked=[], suite=suite)
    with pytest.raises(ConsentConfigurationError, match=message) as raised:
        collect(data, conf)
    assert str(conf / f"{DATASET}.expectations.json") in str(raised.value)


def test_great_expectations_is_imported_only_for_datasets_with_a_suite(tmp_path):
    data, conf = tmp_path / "data", tmp_path / "conf"
    write_partition(data, "a", rows(["s1"]))
    write_config(conf, config(), revoked=[])
    code = (
        "import sys; from airflow_consent.gate import DatasetSpec, collect_partitions; "
        f"collect_partitions([DatasetSpec(uri={str(data / DATASET)!r}, dataset_config_path={str(conf)!r})]); "
        "print('GX=' + str('great_expectations' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "GX=False" in done.stdout
