"""The "Consent decisions" tab and its JSON route, served by the plugin's FastAPI app inside Airflow's
own API server app (``create_app()``, SimpleAuthManager), on a real ledger written by ``Ledger.record``;
and the tab in a real headless chromium on a running ``airflow api-server``.

The browser test needs Debian's ``chromium`` (installed by scripts/bootstrap) and playwright
(requirements/dev.lock); it is marked ``slow`` (about 20 s), so ``scripts/test --fast`` leaves it out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from dag_runs import run_dag
from standalone_processes import free_port
from test_ledger import DIGEST, VIOLATION, report, request, tamper

from airflow_consent.ledger import Ledger

DAG_ID = "consent_ui_train"  # a name no other test module puts in the session's metadata DB
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
PAGE = f"/consent/dags/{DAG_ID}/runs/{RUN_ID}/decisions"
API = f"/consent/api/dags/{DAG_ID}/runs/{RUN_ID}/decisions"


@pytest.fixture
def empty_ledger_url(tmp_path, monkeypatch) -> str:
    """A ledger of this test only, the [consent] ledger_url of this process and of those it starts."""
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)
    return url


@pytest.fixture
def ledger_url(empty_ledger_url) -> str:
    """Run RUN_ID of DAG DAG_ID: partitions ds/a (allowed) and ds/b (denied); run other: ds/c."""
    url = empty_ledger_url
    with Ledger(url) as ledger:
        ledger.record(
            report(("ds/a", True, "sha256:a"), ("ds/b", False, "sha256:b")),
            request(dag_id=DAG_ID, run_id=RUN_ID),
            mode="deny",
            input_digest=DIGEST,
        )
        ledger.record(
            report(("ds/c", True, "sha256:c")), request(dag_id=DAG_ID, run_id="other"), mode="warn", input_digest=DIGEST
        )
    return url


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's API server app with the plugin mounted, SimpleAuthManager users admin and viewer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            "AIRFLOW__CORE__AUTH_MANAGER",
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        )
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-secret-" + "x" * 32)
        from airflow.api_fastapi.app import create_app, purge_cached_app
        from fastapi.testclient import TestClient

        purge_cached_app()
        app = create_app()
        yield TestClient(app)
        purge_cached_app()


def token(role: str | None) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=role or "nobody", role=role))


def bearer(role: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role)}"}


@pytest.mark.parametrize("path", [PAGE, API])
def test_every_route_needs_credentials(api, ledger_url, path):
    assert api.get(path).status_code == 401
    assert api.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


@pytest.mark.parametrize("path", [PAGE, API])
def test_a_user_the_auth_manager_grants_no_dag_access_is_refused(api, ledger_url, path):
    # SimpleAuthManager has no per-DAG permissions: a user without a role is refused every DAG
    assert api.get(path, headers=bearer(None)).status_code == 403


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_the_json_route_lists_the_runs_decisions_per_partition(api, ledger_url, role):
    response = api.get(API, headers=bearer(role))

    assert response.status_code == 200
    body = response.json()
    assert body["verification"]["status"] == "OK"
    assert body["verification"]["problems"] == []
    assert body["verification"]["checked"] == 3
    [a, b] = body["decisions"]  # the other run's partition ds/c is not listed
    assert a["decision_id"] == b["decision_id"]
    assert {k: a[k] for k in ("seq", "partition_id", "verdict", "rules", "mode", "fingerprint")} == {
        "seq": 1,
        "partition_id": "ds/a",
        "verdict": "allow",
        "rules": [],
        "mode": "deny",
        "fingerprint": "sha256:a",
    }
    assert b["verdict"] == "deny"
    assert b["rules"] == [
        {
            "rule_id": VIOLATION.rule_id,
            "severity": VIOLATION.severity,
            "message": VIOLATION.message,
            "remediation": VIOLATION.remediation,
        }
    ]
    assert (b["policy_revision"], b["opa_version"]) == ("sha256:" + "ab" * 32, "1.22.3")


def test_the_tab_renders_every_partitions_decision_with_the_cookie_of_a_ui_session(api, ledger_url):
    api.cookies.set("_token", token("viewer"))
    try:
        response = api.get(PAGE)
    finally:
        api.cookies.clear()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Ledger verification: OK" in page
    for shown in ("ds/a", "ds/b", "CONSENT-001", "critical", VIOLATION.message, "collect consent", "1.22.3"):
        assert shown in page
    assert "ds/c" not in page


def test_a_tampered_ledger_shows_tampered_with_its_problems(api, ledger_url):
    tamper(ledger_url, "UPDATE consent_ledger SET allow = true, violations = '[]' WHERE seq = 2")

    body = api.get(API, headers=bearer("viewer")).json()
    page = api.get(PAGE, headers=bearer("viewer")).text

    assert body["verification"]["status"] == "TAMPERED"
    assert body["verification"]["problems"]
    assert any("seq 2" in problem for problem in body["verification"]["problems"])
    assert "Ledger verification: TAMPERED" in page
    assert body["verification"]["problems"][0].split(":")[0] in page


def test_a_run_without_decisions_says_so(api, ledger_url):
    page = api.get(f"/consent/dags/{DAG_ID}/runs/never/decisions", headers=bearer("viewer")).text

    assert "No consent decision is recorded for this run." in page


def test_the_plugin_registers_the_app_and_the_run_tab():
    from airflow_consent.plugin import ConsentPlugin

    [app] = ConsentPlugin.fastapi_apps
    [tab, nav] = ConsentPlugin.external_views
    assert app["url_prefix"] == "/consent"
    assert (tab["destination"], tab["url_route"]) == ("dag_run", "consent_decisions")
    assert tab["href"] == "consent/dags/{DAG_ID}/runs/{RUN_ID}/decisions"
    assert (nav["destination"], nav["url_route"], nav["href"]) == ("nav", "consent_decisions_all", "consent/decisions")


def test_loading_the_plugin_leaves_fastapi_and_the_api_security_code_unimported():
    # every Airflow process (workers, the DAG processor) loads the plugins; only the API server serves the app
    code = (
        "import sys, airflow_consent.plugin; "
        "print(sorted(m for m in ('fastapi', 'airflow.api_fastapi.core_api.security', 'airflow_consent.ui.app') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip().splitlines()[-1] == "[]"


def test_the_api_server_lists_the_views_and_the_app(api):
    response = api.get("/api/v2/plugins", headers=bearer("admin"))

    assert response.status_code == 200
    [plugin] = [p for p in response.json()["plugins"] if p["name"] == "airflow_consent"]
    assert [(v["name"], v["destination"], v["url_route"]) for v in plugin["external_views"]] == [
        ("Consent decisions", "dag_run", "consent_decisions"),
        ("Consent decisions", "nav", "consent_decisions_all"),
    ]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/consent"]


@pytest.fixture(scope="module")
def dag_train(airflow_db, tmp_path_factory):
    """DAG ``DAG_ID`` in the metadata DB (the deployment-wide page shows only DAGs the auth manager knows)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    folder = tmp_path_factory.mktemp("dags")
    (folder / f"{DAG_ID}.py").write_text(DAG.replace("consent_ui_browser", DAG_ID))
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(DagBag(dag_folder=str(folder)), "dags-folder", None)


@pytest.mark.parametrize("path", ["/consent/decisions", "/consent/api/decisions"])
def test_the_deployment_wide_routes_need_credentials(api, ledger_url, path):
    assert api.get(path).status_code == 401


def test_the_deployment_wide_page_shows_the_readable_dags_decisions(api, ledger_url, dag_train):
    tamper(ledger_url, "UPDATE consent_ledger SET dag_id = 'not_in_the_db' WHERE seq = 3")

    body = api.get("/consent/api/decisions", headers=bearer("viewer")).json()
    page = api.get("/consent/decisions", headers=bearer("viewer")).text
    refused = api.get("/consent/api/decisions", headers=bearer(None)).json()

    assert [(d["seq"], d["dag_id"], d["run_id"]) for d in body["decisions"]] == [
        (1, DAG_ID, RUN_ID),
        (2, DAG_ID, RUN_ID),
    ]
    assert body["verification"]["status"] == "TAMPERED"  # seq 3 was edited
    assert "ds/b" in page and "ds/c" not in page and "Ledger verification: TAMPERED" in page
    assert refused["decisions"] == []  # a user without a role may read no DAG


CHROMIUM = "/usr/bin/chromium"
DAG = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("consent_ui_browser", schedule=None):
    EmptyOperator(task_id="noop")
"""


@pytest.fixture
def api_server(tmp_path, airflow_db, empty_ledger_url):
    """``airflow api-server`` on a free loopback port, on the tests' metadata DB and ``ledger_url``;
    user viewer/viewer-pw."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"viewer": "viewer-pw"}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-secret-" + "x" * 32,
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
    }
    log = (tmp_path / "api-server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "api-server did not answer in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_the_run_page_shows_the_consent_decisions_tab_with_the_ledgers_decisions(
    tmp_path, empty_ledger_url, api_server
):
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "consent_ui_browser.py").write_text(DAG)
    _, dag_run = run_dag(folder, "consent_ui_browser")
    with Ledger(empty_ledger_url) as ledger:
        ledger.record(
            report(("ds/a", True, "sha256:a"), ("ds/b", False, "sha256:b")),
            request(dag_id="consent_ui_browser", run_id=dag_run.run_id),
            mode="deny",
            input_digest=DIGEST,
        )
    login = httpx.post(f"{api_server}/auth/token", json={"username": "viewer", "password": "viewer-pw"})
    assert login.status_code in (200, 201), login.text
    jwt = login.json()["access_token"]

    url = f"{api_server}/dags/consent_ui_browser/runs/{dag_run.run_id}/plugin/consent_decisions"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "_token", "value": jwt, "url": api_server}])
            page = context.new_page()
            page.goto(url)
            page.get_by_text("Consent decisions").first.wait_for(timeout=60_000)
            frame = page.frame_locator("iframe")
            frame.get_by_text("Ledger verification: OK").wait_for(timeout=60_000)
            rows = frame.locator("tbody tr")
            assert rows.count() == 2
            assert "CONSENT-001" in rows.nth(1).inner_text()
            page.screenshot(path=str(tmp_path / "consent_decisions_tab.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "consent_decisions_tab.png").stat().st_size > 10_000
