"""Both engines fail closed, each failure named: against a real OPA binary and server, and, for the
faults a real OPA cannot be made to produce (garbage, hangs), a fake HTTP server at the network edge."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port, running_opa_server

from airflow_consent.engines.local import LocalOpaEngine
from airflow_consent.errors import (
    EngineHTTPError,
    EngineTimeout,
    EngineUnreachable,
    MalformedDecision,
    PolicyError,
    UndefinedDecision,
)
from airflow_consent.hooks.opa import OpaHook

POLICY = """package probe

decision := {"allow": true, "partitions": count(input.partitions)}

strict := to_number(input.not_a_number)
"""


@pytest.fixture(scope="module")
def probe_policies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe-policies")
    (root / "probe.rego").write_text(POLICY)
    return root


@pytest.fixture(scope="module")
def probe_server(opa_binary, probe_policies) -> Iterator[str]:
    with running_opa_server(opa_binary, probe_policies) as url:
        yield url


def opa_hook(monkeypatch, url: str, conn_id: str = "opa_probe", **extra) -> OpaHook:
    host, port = url.removeprefix("http://").split(":")
    conn = {"conn_type": "opa", "host": host, "port": int(port), "extra": {"retries": 0, "timeout": 2, **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return OpaHook(opa_conn_id=conn_id)


# --- local binary --------------------------------------------------------------------------------


def test_local_engine_returns_the_value_version_and_revision(opa_binary, probe_policies):
    answer = LocalOpaEngine(policy_path=probe_policies, opa_binary=opa_binary).evaluate(
        {"partitions": [1, 2, 3]}, "probe/decision"
    )
    assert answer.result == {"allow": True, "partitions": 3}
    assert answer.opa_version == "1.22.3"
    assert answer.policy_revision.startswith("sha256:")


def test_local_engine_revision_changes_with_the_policies(opa_binary, tmp_path):
    (tmp_path / "probe.rego").write_text(POLICY)
    engine = LocalOpaEngine(policy_path=tmp_path, opa_binary=opa_binary)
    before = engine.evaluate({"partitions": []}, "probe/decision").policy_revision
    (tmp_path / "probe.rego").write_text(POLICY + "\nextra := 1\n")
    assert engine.evaluate({"partitions": []}, "probe/decision").policy_revision != before


def test_local_engine_undefined_entrypoint_is_an_error(opa_binary, probe_policies):
    engine = LocalOpaEngine(policy_path=probe_policies, opa_binary=opa_binary)
    with pytest.raises(UndefinedDecision, match="data.probe.missing is undefined"):
        engine.evaluate({"partitions": []}, "probe/missing")


def test_local_engine_builtin_error_is_fatal(opa_binary, probe_policies):
    engine = LocalOpaEngine(policy_path=probe_policies, opa_binary=opa_binary)
    with pytest.raises(PolicyError, match="to_number"):
        engine.evaluate({"not_a_number": "seven"}, "probe/strict")


def test_local_engine_compile_error_names_the_file(opa_binary, tmp_path):
    (tmp_path / "broken.rego").write_text("package broken\n\nallow if {\n")
    with pytest.raises(PolicyError, match="broken.rego"):
        LocalOpaEngine(policy_path=tmp_path, opa_binary=opa_binary).evaluate({}, "broken/allow")


def test_local_engine_missing_binary_is_unreachable(tmp_path, probe_policies):
    engine = LocalOpaEngine(policy_path=probe_policies, opa_binary=tmp_path / "no-opa-here")
    with pytest.raises(EngineUnreachable, match="cannot run"):
        engine.evaluate({}, "probe/decision")


# --- server over REST ---------------------------------------------------------------------------


def test_hook_queries_with_provenance(monkeypatch, probe_server):
    answer = opa_hook(monkeypatch, probe_server).evaluate({"partitions": [1]}, "probe/decision")
    assert answer.result == {"allow": True, "partitions": 1}
    assert answer.opa_version == "1.22.3"


def test_hook_undefined_decision(monkeypatch, probe_server):
    with pytest.raises(UndefinedDecision, match="probe/missing is undefined"):
        opa_hook(monkeypatch, probe_server).evaluate({}, "probe/missing")


def test_hook_builtin_error_is_a_policy_error_not_a_silent_undefined(monkeypatch, probe_server):
    with pytest.raises(PolicyError, match="to_number"):
        opa_hook(monkeypatch, probe_server).evaluate({"not_a_number": "seven"}, "probe/strict")


def test_hook_stopped_server_is_unreachable(monkeypatch, opa_binary, probe_policies):
    port = free_port()
    with running_opa_server(opa_binary, probe_policies, port=port) as url:
        hook = opa_hook(monkeypatch, url)
        assert hook.evaluate({"partitions": []}, "probe/decision").result["allow"] is True
    with pytest.raises(EngineUnreachable, match=f"cannot connect to http://127.0.0.1:{port}"):
        hook.evaluate({"partitions": []}, "probe/decision")


def test_hook_retries_transient_failures_before_giving_up(monkeypatch):
    calls = []
    with fake_opa(lambda: calls.append(1) or (503, b"upstream down")) as url:
        hook = opa_hook(monkeypatch, url, retries=2)
        with pytest.raises(EngineHTTPError, match="HTTP 503"):
            hook.evaluate({}, "probe/decision")
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ((200, b"<html>not json</html>"), MalformedDecision, "not JSON"),
        ((200, b"[1, 2]"), MalformedDecision, "expected a JSON object"),
        ((401, b'{"code": "unauthorized"}'), EngineHTTPError, "HTTP 401"),
        ((200, b'{"provenance": {"version": "1.22.3"}}'), UndefinedDecision, "undefined"),
    ],
)
def test_hook_bad_answers_fail_closed(monkeypatch, reply, error, message):
    with fake_opa(lambda: reply) as url:
        with pytest.raises(error, match=message):
            opa_hook(monkeypatch, url).evaluate({}, "probe/decision")


def test_hook_timeout(monkeypatch):
    release = threading.Event()
    with fake_opa(lambda: release.wait(10) and (200, b"{}")) as url:
        try:
            with pytest.raises(EngineTimeout, match="no answer within 0.3 s"):
                opa_hook(monkeypatch, url, timeout=0.3).evaluate({}, "probe/decision")
        finally:
            release.set()


def test_hook_sends_the_bearer_token(monkeypatch):
    seen = {}

    def reply(headers):
        seen.update(headers)
        return 200, b'{"result": {"ok": true}}'

    with fake_opa(reply, pass_headers=True) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = {"conn_type": "opa", "host": host, "port": int(port), "password": "s3cret", "extra": {"retries": 0}}
        monkeypatch.setenv("AIRFLOW_CONN_OPA_TOKEN", json.dumps(conn))
        assert OpaHook(opa_conn_id="opa_token").evaluate({}, "probe/decision").result == {"ok": True}
    assert seen["Authorization"] == "Bearer s3cret"


@contextmanager
def fake_opa(reply, pass_headers: bool = False) -> Iterator[str]:
    """An HTTP server on loopback answering every POST with ``reply()`` → (status, body)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = reply(dict(self.headers)) if pass_headers else reply()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_hook_uploads_a_policy_as_is_and_refuses_to_rewrite_a_rejected_one(monkeypatch, opa_binary):
    with running_opa_server(opa_binary, bundle=None) as url:
        hook = opa_hook(monkeypatch, url)
        hook.upload_policy("uploaded", 'package uploaded\n\ndecision := {"ok": true}\n')
        assert hook.evaluate({}, "uploaded/decision").result == {"ok": True}

        v0_syntax = "package legacy\n\nallow { true }\n"  # the client would rewrite this to `allow if`
        with pytest.raises(PolicyError, match="OPA rejected policy 'legacy'"):
            hook.upload_policy("legacy", v0_syntax)
        with pytest.raises(UndefinedDecision):
            hook.evaluate({}, "legacy/allow")
