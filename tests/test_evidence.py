"""The Arrow evidence path on real Parquet files: what it measures, and every bad input named by file and problem."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from evidence_data import DATASET, config, rows, utc, write_config, write_partition

from airflow_consent.discovery import discover_partitions
from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.evidence import collector as collector_module
from airflow_consent.evidence.collector import EvidenceCollector
from airflow_consent.evidence.revocations import RevocationList, RevocationMatcher
from airflow_consent.gate import DatasetSpec, collect_partitions
from airflow_consent.models import ContentEvidence, EvidenceProblem


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def conf(tmp_path) -> Path:
    return tmp_path / "conf"


def collect(data: Path, conf: Path | None, **spec) -> dict:
    """Partition id → (evidence, problems) as the gate collects them."""
    specs = [DatasetSpec(uri=str(data / DATASET), dataset_config_path=str(conf) if conf else None, **spec)]
    return {p.id: (p.evidence, p.evidence_problems) for p in collect_partitions(specs)}


def only(data: Path, conf: Path | None, shard: str = "a"):
    return collect(data, conf)[f"{DATASET}/shard={shard}"]


def file_uri(data: Path, shard: str = "a", index: int = 0) -> str:
    return f"{data / DATASET}/shard={shard}/part-{index}.parquet"


# --- what it measures ---------------------------------------------------------------------------


def test_measures_rows_subjects_flags_revocations_and_times_across_batches_and_files(data, conf):
    first = rows(
        ["s1", "s2", "s1", "s3", "r1"],
        face=[True, True, None, False, True],
        model=[False, True, False, False, True],
        collected=[utc(2024, 3, 1), utc(2024, 6, 1), utc(2024, 3, 1), utc(2024, 3, 1), utc(2024, 3, 1)],
        withdrawn=[None, utc(2024, 5, 1), None, None, None],
        expires=[None, None, utc(2024, 3, 1), None, None],
    )
    second = rows(["s2", "r1", "r2", "s4"], face=[True, True, True, True])
    write_partition(data, "a", first, second)
    write_config(conf, config(batch_rows=2), revoked=["r1", "r2", "r3", "nobody"])

    evidence, problems = only(data, conf)

    assert problems == []
    assert evidence.config_source == str(conf / f"{DATASET}.json")
    assert evidence.expectations is None
    assert evidence.content == ContentEvidence.model_validate(
        {
            "rows": 9,
            "distinct_subjects": 6,
            "consent_flags": [
                {"purposes": [], "rows": 2},
                {"purposes": ["face_recognition_training"], "rows": 5},
                {"purposes": ["face_recognition_training", "model_training"], "rows": 2},
            ],
            "revoked": {
                "source": str(conf / "revoked.csv"),
                "listed": 4,
                "rows": 3,
                "subjects": 2,
                "examples": ["r1", "r2"],
            },
            "collected_after_withdrawal": 1,
            "collected_after_expiry": 1,
        }
    )


def test_only_configured_measurements_are_present(data, conf):
    write_partition(data, "a", rows(["s1", "s2"]))
    write_config(conf, {"config_version": "1", "columns": {"subject_id": "subject_id"}})

    evidence, problems = only(data, conf)

    assert problems == []
    assert evidence.content == ContentEvidence(rows=2, distinct_subjects=2)


def test_integer_subject_ids_match_a_csv_list(data, conf):
    write_partition(data, "a", rows([7, 8, 9, 7], subject_type=pa.int32()))
    write_config(conf, config(), revoked=["7", " 9", "10"])

    evidence, problems = only(data, conf)

    assert problems == []
    assert evidence.content.revoked.model_dump() == {
        "source": str(conf / "revoked.csv"),
        "listed": 3,
        "rows": 3,
        "subjects": 2,
        "examples": ["7", "9"],
    }


def test_a_dataset_without_configuration_has_no_evidence(data, conf):
    write_partition(data, "a", rows(["s1"]))
    conf.mkdir()
    (conf / "other_dataset.json").write_text("{}")  # never read: it is not this dataset's

    assert only(data, conf) == (only(data, None)[0], [])
    assert only(data, None)[0].model_dump(exclude_none=True) == {}


def test_the_revocation_list_is_read_once_and_small_partitions_are_matched_together(data, conf, monkeypatch):
    for shard in "abcdef":
        write_partition(data, shard, rows([f"{shard}1", f"{shard}2", "r1"]))
    write_config(conf, config(), revoked=["r1", "b2"])
    loads = []
    real_load = collector_module.load_revocation_list
    monkeypatch.setattr(
        collector_module, "load_revocation_list", lambda source: loads.append(source) or real_load(source)
    )
    calls = []
    real_listed = RevocationMatcher.listed
    monkeypatch.setattr(
        RevocationMatcher, "listed", lambda self, values: calls.append(len(values)) or real_listed(self, values)
    )

    collected = collect(data, conf)

    assert len(loads) == 1
    # one lookup per run of partitions (a run per thread) for the six partitions' 18 distinct subjects
    assert sum(calls) == 18 and len(calls) == min(collector_module.default_threads(), 6)
    assert {i: (e.content.revoked.rows, e.content.revoked.examples) for i, (e, _) in collected.items()} == {
        f"{DATASET}/shard={s}": (2, ["b2", "r1"]) if s == "b" else (1, ["r1"]) for s in "abcdef"
    }


@pytest.mark.parametrize("subject_type", [pa.string(), pa.int64()])
def test_streamed_and_grouped_partitions_measure_the_same(data, conf, tmp_path, subject_type):
    """A partition bigger than one batch is streamed; smaller ones are measured together, or alone when two
    do not fit in a batch: same numbers."""
    import random

    rng = random.Random(7)
    tables = {}
    for shard in "abc":
        n = rng.randrange(40, 60)
        subjects = [rng.randrange(30) for _ in range(n)]
        tables[shard] = [
            rows(
                [s if subject_type == pa.int64() else f"s{s}" for s in subjects[i::2]],
                subject_type=subject_type,
                face=[rng.random() < 0.8 for _ in subjects[i::2]],
                model=[rng.random() < 0.5 for _ in subjects[i::2]],
                collected=[utc(2024, 1, 1 + rng.randrange(20)) for _ in subjects[i::2]],
                withdrawn=[rng.choice([None, utc(2024, 1, 10)]) for _ in subjects[i::2]],
                expires=[rng.choice([None, utc(2024, 1, 15)]) for _ in subjects[i::2]],
            )
            for i in range(2)
        ]
        write_partition(data, shard, *tables[shard])
    revoked = [str(s) if subject_type == pa.int64() else f"s{s}" for s in range(0, 30, 4)]
    write_config(conf, config(batch_rows=1 << 20), revoked=revoked)
    grouped = collect(data, conf)
    write_config(conf, config(batch_rows=60), revoked=revoked)  # 40-59 rows each: one partition per batch
    alone = collect(data, conf)
    write_config(conf, config(batch_rows=7), revoked=revoked)
    streamed = collect(data, conf)

    assert all(problems == [] for _, problems in grouped.values())
    assert any(e.content.revoked.rows for e, _ in grouped.values())
    assert grouped == alone == streamed
    assert {e.content.rows for e, _ in grouped.values()} == {sum(t.num_rows for t in tables[s]) for s in "abc"}


def test_matcher_says_which_ids_are_listed():
    strings = RevocationList(source="inline", values=pa.array(["x", "y"]), kind="string")
    assert RevocationMatcher(strings, "string").listed(pa.array(["a", "y", "x", "y"])).tolist() == [
        False,
        True,
        True,
        True,
    ]
    numbers = RevocationList(source="inline", values=pa.array([5, 3, 9], pa.int64()), kind="int")
    listed = RevocationMatcher(numbers, "int").listed(pa.array([9, 1, 3, 10, 5, 5], pa.int64()))
    assert listed.tolist() == [True, False, True, False, True, True]
    empty = RevocationList(source="inline", values=pa.array([], pa.int64()), kind="int")
    assert RevocationMatcher(empty, "int").listed(pa.array([1], pa.int64())).tolist() == [False]


# --- bad input: a violation naming the file and the problem --------------------------------------


def test_misnamed_column_is_named_with_a_hint(data, conf):
    write_partition(
        data,
        "a",
        rows(["s1"]).rename_columns(
            ["subject_id", "Consent_Face", "consent_model", "collected_at", "withdrawn_at", "expires_at", "photo_id"]
        ),
    )
    write_config(conf, config(), revoked=[])

    evidence, problems = only(data, conf)

    assert evidence.content is None
    assert problems == [
        EvidenceProblem(
            file=file_uri(data),
            field="consent_face",
            message="column 'consent_face' is missing (did you mean 'Consent_Face'?)",
        )
    ]


def test_missing_column_lists_the_columns(data, conf):
    write_partition(data, "a", rows(["s1"]).drop_columns(["expires_at"]))
    write_config(conf, config(), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=file_uri(data),
            field="expires_at",
            message="column 'expires_at' is missing (columns: subject_id, consent_face, consent_model, collected_at, "
            "withdrawn_at, photo_id)",
        )
    ]


def test_wrong_types_are_named_per_column(data, conf):
    table = rows(["s1"])
    table = table.set_column(1, "consent_face", pa.array([1], pa.int64()))
    table = table.set_column(0, "subject_id", pa.array([1.5], pa.float64()))
    table = table.set_column(3, "collected_at", pa.array(["2024-03-01"], pa.string()))
    write_partition(data, "a", table)
    write_config(conf, config(), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=file_uri(data),
            field="subject_id",
            message="column 'subject_id' has type double; expected integers or strings",
        ),
        EvidenceProblem(
            file=file_uri(data), field="consent_face", message="column 'consent_face' has type int64; expected bool"
        ),
        EvidenceProblem(
            file=file_uri(data),
            field="collected_at",
            message="column 'collected_at' has type string; expected a timestamp",
        ),
    ]


def test_a_file_with_other_subject_types_is_named(data, conf):
    write_partition(data, "a", rows(["s1"]), rows([1], subject_type=pa.int64()))
    write_config(conf, config(), revoked=[])

    (problem,) = only(data, conf)[1]
    assert (problem.file, problem.field) == (f"{data / DATASET}/shard=a", "subject_id")
    assert problem.message.startswith("column 'subject_id' holds integers in some files and strings in others")


def test_mixing_zoned_and_naive_timestamps_is_a_problem(data, conf):
    table = rows(["s1"])
    table = table.set_column(4, "withdrawn_at", pa.array([None], pa.timestamp("us")))
    write_partition(data, "a", table)
    write_config(conf, config(), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=file_uri(data),
            field="withdrawn_at",
            message="timestamp columns ['withdrawn_at'] have no time zone but the others do: they cannot be compared",
        )
    ]


def test_null_subject_ids_are_counted_against_their_file(data, conf):
    write_partition(data, "a", rows(["s1", "s2"]), rows(["s3", None, None]))
    write_config(conf, config(batch_rows=2), revoked=[])

    evidence, problems = only(data, conf)

    assert evidence.content is None
    assert problems == [
        EvidenceProblem(
            file=file_uri(data, index=1),
            field="subject_id",
            message="2 row(s) have a null subject id: they cannot be checked against consent or revocations",
        )
    ]


def test_a_row_without_collection_time_but_with_a_withdrawal_is_a_problem(data, conf):
    write_partition(data, "a", rows(["s1", "s2"], collected=[None, utc(2024, 1, 1)], withdrawn=[utc(2024, 2, 1), None]))
    write_config(conf, config(), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=f"{data / DATASET}/shard=a",
            field="collected_at",
            message="1 row(s) have no collected_at but a withdrawal or expiry time: cannot tell whether they were "
            "collected after consent ended",
        )
    ]


def test_corrupt_parquet_file_is_named(data, conf):
    directory = write_partition(data, "a", rows(["s1"]))
    (directory / "part-0.parquet").write_bytes(b"PAR1 this is not parquet")
    write_config(conf, config(), revoked=[])

    (problem,) = only(data, conf)[1]
    assert (problem.file, problem.field) == (file_uri(data), None)
    assert problem.message.startswith("not a readable Parquet file: ")


def test_truncated_parquet_file_is_named(data, conf):
    directory = write_partition(data, "a", rows([f"s{i}" for i in range(1000)]))
    path = directory / "part-0.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    write_config(conf, config(), revoked=[])

    (problem,) = only(data, conf)[1]
    assert problem.file == file_uri(data) and problem.message.startswith("not a readable Parquet file: ")


def test_empty_partition_is_a_problem(data, conf):
    write_partition(data, "a", rows([]))
    write_config(conf, config(), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=f"{data / DATASET}/shard=a", message="the partition has no rows: there is nothing to check"
        )
    ]


def test_partition_without_matching_data_files_is_a_problem(data, conf):
    directory = write_partition(data, "a")
    (directory / "rows.csv").write_text("subject_id\ns1\n")
    write_config(conf, config(data_files="*.parquet"), revoked=[])

    assert only(data, conf)[1] == [
        EvidenceProblem(file=f"{data / DATASET}/shard=a/rows.csv", message=UNMEASURED.format("*.parquet")),
        EvidenceProblem(
            file=f"{data / DATASET}/shard=a", message="no data file matches '*.parquet': there are no rows to check"
        ),
    ]


UNMEASURED = (
    "unmeasured file in partition: it does not match data_files {!r}, so its rows were not checked, yet a "
    "reader of the partition reads it; rename or remove it, or widen data_files"
)


@pytest.mark.parametrize("name", ["part-1.parq", "part-1.PARQUET", "part-1", "part-1.parquet.bak"])
def test_every_data_file_is_measured_whatever_its_name(data, conf, name):
    """Revoked subjects in a file a reader reads are found, whatever the file is called."""
    directory = write_partition(data, "a", rows(["ok"]))
    pq.write_table(rows(["r1"]), directory / name)
    write_config(conf, config(), revoked=["r1"])

    evidence, problems = only(data, conf)

    assert problems == []
    assert (evidence.content.rows, evidence.content.revoked.examples) == (2, ["r1"])


@pytest.mark.parametrize("name", ["part-1.parq", "part-1.PARQUET", "part-1"])
def test_a_data_file_outside_data_files_is_an_unmeasured_file(data, conf, name):
    directory = write_partition(data, "a", rows(["ok"]))
    pq.write_table(rows(["r1"]), directory / name)
    write_config(conf, config(data_files="*.parquet"), revoked=["r1"])

    assert only(data, conf)[1] == [
        EvidenceProblem(file=f"{data / DATASET}/shard=a/{name}", message=UNMEASURED.format("*.parquet"))
    ]


def test_unreadable_revocation_list_denies_every_partition_naming_the_list(data, conf):
    write_partition(data, "a", rows(["s1"]))
    write_partition(data, "b", rows(["s2"]))
    write_config(conf, config(revocations={"path": "missing.parquet"}))

    collected = collect(data, conf)

    for evidence, problems in collected.values():
        (problem,) = problems
        assert evidence.content is None
        assert (problem.file, problem.field) == (str(conf / "missing.parquet"), "revocations")
        assert problem.message.startswith("cannot read the revocation list: FileNotFoundError")


def test_revocation_list_without_the_column(data, conf):
    write_partition(data, "a", rows(["s1"]))
    pq.write_table(pa.table({"user": ["s1"]}), conf.mkdir() or conf / "revoked.parquet")
    write_config(conf, config(revocations={"path": "revoked.parquet"}))

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=str(conf / "revoked.parquet"), field="revocations", message="no column 'subject_id' (columns: user)"
        )
    ]


def test_corrupt_revocation_list(data, conf):
    write_partition(data, "a", rows(["s1"]))
    conf.mkdir()
    (conf / "revoked.parquet").write_bytes(b"garbage")
    write_config(conf, config(revocations={"path": "revoked.parquet"}))

    (problem,) = only(data, conf)[1]
    assert problem.file == str(conf / "revoked.parquet")
    assert problem.message.startswith("cannot read the revocation list: ")


def test_revocation_list_of_another_id_type_never_matches_and_says_so(data, conf):
    write_partition(data, "a", rows(["s1"]))
    conf.mkdir()
    pq.write_table(pa.table({"subject_id": pa.array([1, 2], pa.int64())}), conf / "revoked.parquet")
    write_config(conf, config(revocations={"path": "revoked.parquet"}))

    assert only(data, conf)[1] == [
        EvidenceProblem(
            file=str(conf / "revoked.parquet"),
            field="revocations",
            message="the list holds int ids but the data's subject ids are strings: they never match",
        )
    ]


def test_csv_ids_that_are_not_integers_cannot_match_integer_subjects(data, conf):
    write_partition(data, "a", rows([1, 2], subject_type=pa.int64()))
    write_config(conf, config(), revoked=["1", "user-2"])

    (problem,) = only(data, conf)[1]
    assert problem.file == str(conf / "revoked.csv")
    assert problem.message.startswith("the subject ids are integers in the data but not in the list: ")


# --- revocation lists in a database ------------------------------------------------------------


def make_sqlite(path: Path, subjects: list) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table revoked (subject_id text, reason text)")
        db.executemany("insert into revoked values (?, 'withdrawn')", [(s,) for s in subjects])


def test_revocation_list_from_a_sqlalchemy_url(data, conf, tmp_path):
    write_partition(data, "a", rows(["s1", "s2", "s2"]))
    make_sqlite(tmp_path / "rev.db", ["s2", None, "s9"])
    write_config(conf, config(revocations={"url": f"sqlite:///{tmp_path / 'rev.db'}", "table": "revoked"}))

    evidence, problems = only(data, conf)

    assert problems == []
    assert evidence.content.revoked.model_dump() == {
        "source": f"table 'revoked' of sqlite:///{tmp_path / 'rev.db'}",
        "listed": 2,
        "rows": 2,
        "subjects": 1,
        "examples": ["s2"],
    }


def test_revocation_list_from_an_airflow_connection(data, conf, tmp_path, monkeypatch):
    write_partition(data, "a", rows(["s1", "s2"]))
    make_sqlite(tmp_path / "rev.db", ["s1"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_REVOCATIONS_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "rev.db")})
    )
    write_config(conf, config(revocations={"conn_id": "revocations_db", "table": "revoked"}))

    evidence, problems = only(data, conf)

    assert problems == []
    assert evidence.content.revoked.source == "table 'revoked' of connection 'revocations_db'"
    assert evidence.content.revoked.rows == 1


def test_missing_table_is_an_unreadable_list(data, conf, tmp_path):
    write_partition(data, "a", rows(["s1"]))
    make_sqlite(tmp_path / "rev.db", [])
    write_config(conf, config(revocations={"url": f"sqlite:///{tmp_path / 'rev.db'}", "table": "nope"}))

    (problem,) = only(data, conf)[1]
    assert problem.file == f"table 'nope' of sqlite:///{tmp_path / 'rev.db'}"
    assert (
        "cannot read the revocation list: OperationalError" in problem.message
        and "no such table: nope" in problem.message
    )


# --- configuration errors stop the gate, naming the setting ------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"config_version": "1", "columns": ', "malformed|Invalid JSON|EOF"),
        ({"config_version": "2", "columns": {"subject_id": "s"}}, "config_version: Input should be '1'"),
        (
            {"config_version": "1", "columns": {"subject_id": "s", "consent_flags": {}}},
            "columns.consent_flags: Extra inputs",
        ),
        (
            {"config_version": "1", "columns": {"subject_id": "s", "consent_withdrawn_at": "w"}},
            "columns: Value error, consent_withdrawn_at and consent_expires_at need collected_at",
        ),
        ({"config_version": "1", "columns": {"subject_id": "s", "consent": {"a": "s"}}}, "a column is named twice"),
        (
            config(revocations={"path": "r.csv", "url": "sqlite://", "table": "t"}),
            "set exactly one of path, url, conn_id",
        ),
        (config(revocations={"url": "postgresql://u:secret@db/x", "table": "t"}), "must not contain a password"),
        (config(revocations={"path": "r.txt"}), "path must end in one of"),
        (config(revocations={"conn_id": "db"}), "url and conn_id need table"),
        (
            config(revocations={"path": "$NO_SUCH_VARIABLE_HERE/r.csv"}),
            "revocations.path: .* names an unset environment variable",
        ),
        (config(expectations={}), "expectations.suite: no such file"),
    ],
)
def test_bad_configuration_stops_the_gate_naming_file_and_field(data, conf, document, message):
    write_partition(data, "a", rows(["s1"]))
    write_config(conf, document)
    with pytest.raises(ConsentConfigurationError, match=message) as raised:
        collect(data, conf)
    assert str(conf / f"{DATASET}.json") in str(raised.value)


def test_configuration_directory_that_does_not_exist_names_the_setting(data, tmp_path):
    write_partition(data, "a", rows(["s1"]))
    with pytest.raises(ConsentConfigurationError, match=r"dataset_config_path '.*nowhere' is not a directory"):
        collect(data, tmp_path / "nowhere")


def test_collector_reuses_its_lists_across_datasets(data, conf, tmp_path):
    write_partition(data, "a", rows(["r1"]))
    other = tmp_path / "other"
    write_partition(other, "a", rows(["r1", "r1"]))
    write_config(conf, config(), revoked=["r1"])
    collector = EvidenceCollector(threads=1)

    first = collector.measure(discover_partitions(str(data / DATASET)), conf)
    second = collector.measure(discover_partitions(str(other / DATASET)), conf)

    assert [e.content.revoked.rows for e, _ in first + second] == [1, 2]
    assert len(collector._lists) == 1


def test_the_shipped_revocation_list_names_the_sample_data_revoked_subjects():
    import pyarrow.csv as pacsv

    from airflow_consent.sample_data import REVOKED_SUBJECTS

    shipped = Path(__file__).resolve().parent.parent / "dags" / "datasets"
    listed = pacsv.read_csv(shipped / "revoked_subjects.csv").column("subject_id").to_pylist()
    assert set(REVOKED_SUBJECTS) <= set(listed)


def test_files_with_other_units_zones_and_nullability_are_measured_together(data, conf):
    table = rows(["s1", "s2"])
    strict = table.cast(
        pa.schema(
            [pa.field(f.name, f.type, nullable=f.name not in ("subject_id", "consent_face")) for f in table.schema]
        ).with_metadata({b"origin": b"another writer"})
    )
    write_partition(data, "a", table, strict)
    other = rows(["s3"], subject_type=pa.large_string())
    write_partition(
        data, "b", other.set_column(3, "collected_at", other.column(3).cast(pa.timestamp("ms", tz="Europe/Berlin")))
    )
    write_config(conf, config(), revoked=["s2"])

    collected = collect(data, conf)

    assert {i: (p, e.content.rows, e.content.revoked.rows) for i, (e, p) in collected.items()} == {
        f"{DATASET}/shard=a": ([], 4, 2),
        f"{DATASET}/shard=b": ([], 1, 0),
    }


def test_revocation_table_may_be_schema_qualified(data, conf, tmp_path):
    write_partition(data, "a", rows(["s1", "s2"]))
    make_sqlite(tmp_path / "rev.db", ["s2"])
    url = f"sqlite:///{tmp_path / 'rev.db'}"
    write_config(conf, config(revocations={"url": url, "table": "main.revoked"}))  # SQLite's schema is "main"

    evidence, problems = only(data, conf)

    assert problems == [] and evidence.content.revoked.rows == 1
