"""Fingerprints that read a file only when its metadata proves nothing, on real files, a real SQLite
cache, a real gate and ledger, and S3 through moto's server (the network edge) with the real s3fs."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_consent import fingerprint_cache
from airflow_consent.clearance import ClearanceRefused, check_clearance
from airflow_consent.discovery import discover_partitions, fingerprint, fingerprint_of_contents, fingerprints
from airflow_consent.fingerprint_cache import CACHE_FILE, SETTLE_NS, FingerprintCache
from airflow_consent.sample_data import generate_profile_photos

PURPOSE = "face_recognition_training"
RUN = "manual__2026-12-01T00:00:00+00:00"
STUDIO_2024 = "profile_photos/source=studio_optin/year=2024"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A fresh $AIRFLOW_HOME per test: its own cache file and ledger key."""
    import airflow.configuration

    directory = tmp_path / "home"
    directory.mkdir()
    monkeypatch.setattr(airflow.configuration, "AIRFLOW_HOME", str(directory))
    return directory


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The paths whose bytes were read and hashed (by the real hashing, counted)."""
    seen: list[str] = []
    real = fingerprint_cache.hash_content

    def counted(filesystem, path):
        seen.append(path)
        return real(filesystem, path)

    monkeypatch.setattr(fingerprint_cache, "hash_content", counted)
    return seen


def settle(root: Path) -> None:
    """Wait until every file under ``root`` last changed more than SETTLE_NS ago: only then is it cached."""
    newest = max(path.stat().st_ctime_ns for path in root.rglob("*"))
    time.sleep(max(0, newest + SETTLE_NS - time.time_ns()) / 1e9 + 0.05)


def expected(partition) -> str:
    """The fingerprint from the partition's bytes, read here."""
    return fingerprint_of_contents(partition, {f.name: Path(f.path).read_bytes() for f in partition.files})


def generate(root: Path, **options) -> Path:
    """The sample dataset, generated with the cache off (its manifests attest fingerprints): nothing cached yet."""
    with pytest.MonkeyPatch.context() as during:
        during.setenv("AIRFLOW__CONSENT__FINGERPRINT_CACHE", "off")
        return generate_profile_photos(root, **options)


@pytest.fixture
def photos(tmp_path) -> Path:
    return generate(tmp_path / "data")


def test_an_unchanged_file_is_read_once_then_proved_by_its_identity(photos, home, reads):
    settle(photos)
    partitions = discover_partitions(str(photos))
    files = [f.path for p in partitions for f in p.files]

    assert fingerprints(partitions) == [expected(p) for p in partitions]
    assert sorted(reads) == sorted(files)
    reads.clear()
    assert [fingerprint(p) for p in discover_partitions(str(photos))] == [expected(p) for p in partitions]
    assert reads == []
    assert oct((home / CACHE_FILE).stat().st_mode & 0o777) == "0o600"


def test_a_file_changed_in_the_last_second_is_read_every_time_and_not_cached(tmp_path, home, reads):
    photos = generate(tmp_path / "fresh", sources=("stock",))
    [partition] = discover_partitions(str(photos))
    (data_file,) = partition.files
    reads.clear()  # the generator's own fingerprints

    fingerprint(partition), fingerprint(partition)

    assert reads == [data_file.path, data_file.path]
    assert rows(home / CACHE_FILE) == []


def rows(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT location, identity, digest, size, mac FROM fingerprints").fetchall()


# --- the gate and the clearance still see every rewrite -----------------------------------------------


def training_task(dataset: Path):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_consent.operators.consent import ConsentGateOperator

    with DAG(dag_id="train_faces", schedule=None, tags=["training"]) as dag:
        ConsentGateOperator(
            task_id="consent_gate", datasets=[str(dataset)], purpose=PURPOSE, partition_filter=[("year", "=", "2024")]
        ) >> EmptyOperator(task_id="train")
    return dag.task_dict["train"]


def run_gate(dataset: Path, ledger):
    """The real gate (local OPA, shipped policies) on 2024, recorded in run RUN: its report."""
    from airflow_consent.engines.local import LocalOpaEngine
    from airflow_consent.gate import DatasetSpec, evaluate_gate
    from airflow_consent.models import GateRequest

    request = GateRequest(
        purpose=PURPOSE, dag_id="train_faces", run_id=RUN, task_id="consent_gate", evaluated_at=datetime.now(UTC)
    )
    report = evaluate_gate(
        request, [DatasetSpec(uri=str(dataset))], LocalOpaEngine(), partition_filter=[("year", "=", "2024")]
    )
    ledger.record(report, request, mode="deny", input_digest=report.input_digest)
    return report


def rewrite_keeping_size_and_mtime(path: Path, *, rename: bool) -> bytes:
    """Change one byte of ``path``, in place or by renaming a new file over it, then restore its mtime."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target = path.with_name(".rewritten") if rename else path
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    if rename:
        os.replace(target, path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns  # what catches an in-place rewrite
    assert (after.st_ino != before.st_ino) is rename  # what also catches a replacement
    return bytes(data)


@pytest.fixture
def gated(tmp_path, opa_binary, home):
    """A studio dataset whose 2024 partition the real gate allowed (and cached), a ledger, the training task."""
    from airflow_consent.ledger import Ledger

    dataset = generate(tmp_path / "data", sources=("studio_optin",))
    settle(dataset)
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        report = run_gate(dataset, ledger)
        assert report.allow
        yield dataset, ledger, training_task(dataset), {p.id: p.fingerprint for p in report.partitions}


@pytest.mark.parametrize("rename", [False, True], ids=["in place (ctime)", "renamed over (inode, ctime)"])
def test_a_rewrite_with_the_same_size_and_mtime_is_seen_by_the_clearance_and_the_gate(gated, reads, rename):
    dataset, ledger, task, allowed = gated
    context = {"run_id": RUN, "task": task}
    assert [p.fingerprint for p in check_clearance(task, context, ledger=ledger)] == [allowed[STUDIO_2024]]
    assert reads == []  # cleared from the cache, no byte read

    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    data = rewrite_keeping_size_and_mtime(data_file, rename=rename)

    with pytest.raises(ClearanceRefused) as refused:
        check_clearance(task, context, ledger=ledger)
    [partition] = discover_partitions(str(dataset), partition_filter=[("year", "=", "2024")])
    now = fingerprint_of_contents(partition, {"part-0.parquet": data})
    (problem,) = refused.value.problems
    assert (problem.kind, problem.allowed_fingerprint, problem.current_fingerprint) == (
        "changed",
        allowed[STUDIO_2024],
        now,
    )
    assert reads == [str(data_file)]
    (denied,) = run_gate(dataset, ledger).partitions  # its provider attested the old bytes
    assert (denied.fingerprint, [v.rule_id for v in denied.violations]) == (now, ["PROV-005"])


def forge(database: Path, data_file: Path, digest: str, mac: str) -> None:
    """Write the entry an attacker wants: the rewritten file's identity, with ``digest``."""
    identity = fingerprint_cache._local_identity(str(data_file), time.time_ns())
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?, ?)",
            (identity.location, identity.proof, digest, identity.size, mac),
        )


@pytest.mark.parametrize("signed_with", ["the old entry's signature", "another key"])
def test_a_forged_entry_for_a_rewritten_file_is_ignored(gated, home, reads, signed_with):
    dataset, ledger, task, allowed = gated
    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    [(_, _, old_digest, size, old_mac)] = [row for row in rows(home / CACHE_FILE) if str(data_file) in row[0]]
    rewrite_keeping_size_and_mtime(data_file, rename=False)
    identity = fingerprint_cache._local_identity(str(data_file), time.time_ns())
    other = FingerprintCache(home / "other.db", b"not the deployment's key, 32 chars")
    mac = old_mac if signed_with == "the old entry's signature" else other._mac(identity, old_digest, size)
    forge(home / CACHE_FILE, data_file, old_digest, mac)

    with pytest.raises(ClearanceRefused) as refused:
        check_clearance(task, {"run_id": RUN, "task": task}, ledger=ledger)

    (problem,) = refused.value.problems
    assert problem.kind == "changed" and problem.current_fingerprint != allowed[STUDIO_2024]
    assert reads == [str(data_file)]  # the forged entry cost a read, nothing more


def test_a_holder_of_the_deployment_key_can_forge_an_entry_as_it_can_a_ledger_record(gated, home):
    """The documented trust boundary: the cache is as trustworthy as the ledger key is secret."""
    from airflow_consent.ledger.keys import deployment_key

    dataset, ledger, task, allowed = gated
    data_file = dataset / "source=studio_optin" / "year=2024" / "part-0.parquet"
    [(_, _, old_digest, size, _)] = [row for row in rows(home / CACHE_FILE) if str(data_file) in row[0]]
    rewrite_keeping_size_and_mtime(data_file, rename=False)
    identity = fingerprint_cache._local_identity(str(data_file), time.time_ns())
    key_holder = FingerprintCache(home / CACHE_FILE, deployment_key(None, create=False).secret)
    forge(home / CACHE_FILE, data_file, old_digest, key_holder._mac(identity, old_digest, size))

    assert [p.fingerprint for p in check_clearance(task, {"run_id": RUN, "task": task}, ledger=ledger)] == [
        allowed[STUDIO_2024]
    ]


def test_a_tampered_digest_for_an_unchanged_file_costs_one_read_and_is_repaired(photos, home, reads):
    settle(photos)
    partitions = discover_partitions(str(photos))
    right = fingerprints(partitions)
    with sqlite3.connect(home / CACHE_FILE) as connection:
        connection.execute("UPDATE fingerprints SET digest = ? WHERE location LIKE '%stock%'", ("0" * 64,))
        connection.execute("UPDATE fingerprints SET size = '17' WHERE location LIKE '%okcupid/year=2013%'")
    reads.clear()

    assert fingerprints(partitions) == right
    assert sorted(Path(path).parts[-2] for path in reads) == ["year=2013", "year=2022"]
    reads.clear()
    assert fingerprints(partitions) == right and reads == []


# --- a broken cache is ignored or rebuilt, never trusted -------------------------------------------------


@pytest.mark.parametrize("damage", ["not a database", "another layout"])
def test_a_broken_cache_file_is_created_again(photos, home, reads, damage):
    settle(photos)
    partitions = discover_partitions(str(photos))
    database = home / CACHE_FILE
    if damage == "not a database":
        database.write_bytes(b"this is not SQLite\0" * 300)
    else:
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE fingerprints (location TEXT PRIMARY KEY, digest TEXT)")
            connection.execute("INSERT INTO fingerprints VALUES ('anything', 'x')")

    assert fingerprints(partitions) == [expected(p) for p in partitions]
    assert len(rows(database)) == len(partitions)
    reads.clear()
    assert fingerprints(partitions) == [expected(p) for p in partitions] and reads == []


def test_a_cache_that_cannot_be_opened_is_ignored_with_one_warning(photos, home, reads, caplog, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__FINGERPRINT_CACHE", str(home / "a-directory"))
    (home / "a-directory").mkdir()
    settle(photos)
    partitions = discover_partitions(str(photos))

    with caplog.at_level(logging.WARNING, logger=fingerprint_cache.__name__):
        assert [fingerprint(p) for p in partitions] == [expected(p) for p in partitions]
        assert fingerprints(partitions) == [expected(p) for p in partitions]

    assert len(reads) == 2 * len(partitions)
    assert [r.getMessage().split(" (")[0] for r in caplog.records if r.name == fingerprint_cache.__name__] == [
        f"Cannot read the fingerprint cache {home / 'a-directory'}"
    ]


def test_the_cache_can_be_turned_off_or_moved(photos, home, reads, monkeypatch, tmp_path):
    settle(photos)
    partitions = discover_partitions(str(photos))
    monkeypatch.setenv("AIRFLOW__CONSENT__FINGERPRINT_CACHE", "off")
    fingerprints(partitions), fingerprints(partitions)
    assert len(reads) == 2 * len(partitions) and not (home / CACHE_FILE).exists()

    monkeypatch.setenv("AIRFLOW__CONSENT__FINGERPRINT_CACHE", str(tmp_path / "elsewhere.db"))
    fingerprints(partitions)
    assert len(rows(tmp_path / "elsewhere.db")) == len(partitions) and not (home / CACHE_FILE).exists()


# --- parallel, and shared by processes -------------------------------------------------------------------


def test_files_are_hashed_on_several_threads(photos, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CONSENT__FINGERPRINT_CACHE", "off")  # every file is read
    meeting = threading.Barrier(2, timeout=30)
    real = fingerprint_cache.hash_content

    def hash_in_pairs(filesystem, path):
        meeting.wait()  # returns only when another file is being hashed at the same time
        return real(filesystem, path)

    monkeypatch.setattr(fingerprint_cache, "hash_content", hash_in_pairs)
    partitions = discover_partitions(str(photos))[:4]

    assert fingerprints(partitions) == [expected(p) for p in partitions]


FINGERPRINT_SCRIPT = """
import json, sys
from airflow_consent import fingerprint_cache
from airflow_consent.discovery import discover_partitions, fingerprints
reads = []
real = fingerprint_cache.hash_content
fingerprint_cache.hash_content = lambda filesystem, path: (reads.append(path), real(filesystem, path))[1]
runs = [fingerprints(discover_partitions(sys.argv[1])) for _ in range(int(sys.argv[2]))]
print(json.dumps({"runs": runs, "reads": len(reads)}))
"""


def fingerprint_processes(dataset: Path, home: Path, processes: int, runs: int) -> list[dict]:
    """Run ``processes`` fresh Python processes at once, each fingerprinting ``dataset`` ``runs`` times."""
    environment = {**os.environ, "AIRFLOW_HOME": str(home)}
    started = [
        subprocess.Popen(
            [sys.executable, "-c", FINGERPRINT_SCRIPT, str(dataset), str(runs)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for process in started:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    return results


def test_processes_share_the_cache_at_once_and_after_each_other(tmp_path, home):
    dataset = tmp_path / "many"
    for index in range(40):
        for name in ("part-0.parquet", "part-1.parquet"):
            path = dataset / f"shard={index:02d}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(20_000 + index))
    settle(dataset)
    right = [expected(p) for p in discover_partitions(str(dataset))]

    together = fingerprint_processes(dataset, home, processes=3, runs=2)
    (later,) = fingerprint_processes(dataset, home, processes=1, runs=1)

    assert all(run == right for result in together for run in result["runs"])
    assert later == {"runs": [right], "reads": 0}
    with sqlite3.connect(home / CACHE_FILE) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(rows(home / CACHE_FILE)) == 80


# --- S3: the store's own SHA-256, else its object identity ------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a loopback port, and the environment that points boto3 and s3fs at it."""
    server_module = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        yield
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request):
    import boto3

    client = boto3.client("s3")
    name = f"lake-{request.node.name.split('[')[0][5:30].replace('_', '-')}-{time.time_ns() % 10**6}"
    client.create_bucket(Bucket=name)
    return client, name


def listed(bucket: str, **options) -> list:
    """Discover ``s3://bucket/photos`` afresh: s3fs keeps what it listed (with ETags) in its instance."""
    import fsspec

    fsspec.filesystem("s3").invalidate_cache()
    return discover_partitions(f"s3://{bucket}/photos", **options)


def put_partitions(client, bucket: str, local: Path, **upload) -> None:
    """Upload every data file of the local dataset under ``s3://bucket/photos/``."""
    for path in sorted(local.rglob("*.parquet")):
        client.put_object(Bucket=bucket, Key=f"photos/{path.relative_to(local)}", Body=path.read_bytes(), **upload)


def test_s3_single_part_objects_with_a_sha256_checksum_are_never_read(photos, bucket, reads):
    client, name = bucket
    put_partitions(client, name, photos, ChecksumAlgorithm="SHA256")

    assert fingerprints(listed(name)) == fingerprints(discover_partitions(str(photos)))
    assert not [path for path in reads if path.startswith(name)]


def test_s3_objects_without_one_are_read_once_then_proved_by_etag_and_version(photos, bucket, reads):
    client, name = bucket
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    put_partitions(client, name, photos)  # botocore's default checksum: CRC32, not our digest
    local = fingerprints(discover_partitions(str(photos)))
    reads.clear()

    assert fingerprints(listed(name)) == local
    assert len(reads) == len(local)
    assert fingerprints(listed(name)) == local and len(reads) == len(local)

    key = "photos/source=stock/year=2022/part-0.parquet"
    same = client.get_object(Bucket=name, Key=key)["Body"].read()
    client.put_object(Bucket=name, Key=key, Body=same)  # the same bytes, a new version: read again
    changed = bytearray(same)
    changed[len(changed) // 2] ^= 0xFF
    assert fingerprints(listed(name)) == local and len(reads) == len(local) + 1
    client.put_object(Bucket=name, Key=key, Body=bytes(changed))  # same size, new content and version
    [stock] = listed(name, partition_filter=[("source", "=", "stock")])
    assert fingerprint(stock) == fingerprint_of_contents(stock, {"part-0.parquet": bytes(changed)})


def test_s3_multipart_objects_are_read_their_composite_checksum_is_not_our_digest(tmp_path, bucket, reads):
    client, name = bucket
    part = 5 << 20
    body = os.urandom(part) + os.urandom(part)
    upload = client.create_multipart_upload(Bucket=name, Key="photos/source=big/part-0.bin", ChecksumAlgorithm="SHA256")
    parts = []
    for number, start in enumerate(range(0, len(body), part), start=1):
        answer = client.upload_part(
            Bucket=name,
            Key="photos/source=big/part-0.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body[start : start + part],
            ChecksumAlgorithm="SHA256",
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": answer["ChecksumSHA256"]})
    client.complete_multipart_upload(
        Bucket=name, Key="photos/source=big/part-0.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )

    [partition] = listed(name)

    assert fingerprint(partition) == fingerprint_of_contents(partition, {"part-0.bin": body})
    assert reads == [f"{name}/photos/source=big/part-0.bin"]
