"""The "Consent decisions" tab in a real headless chromium, on a running ``airflow api-server``:
the UI shows the tab on the DAG run page and the iframe renders the ledger's decisions.

Needs Debian's ``chromium`` (installed by scripts/bootstrap) and playwright (requirements/dev.lock); marked
``slow`` (about 20 s: an api-server start), so ``scripts/test --fast`` leaves it out."""

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
from test_ledger import DIGEST, report, request

from airflow_consent.ledger import Ledger

CHROMIUM = "/usr/bin/chromium"
DAG = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("consent_ui_browser", schedule=None):
    EmptyOperator(task_id="noop")
"""


@pytest.fixture
def ledger_url(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    monkeypatch.setenv("AIRFLOW__CONSENT__LEDGER_URL", url)
    return url


@pytest.fixture
def api_server(tmp_path, airflow_db, ledger_url):
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
def test_the_run_page_shows_the_consent_decisions_tab_with_the_ledgers_decisions(tmp_path, ledger_url, api_server):
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "consent_ui_browser.py").write_text(DAG)
    _, dag_run = run_dag(folder, "consent_ui_browser")
    with Ledger(ledger_url) as ledger:
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
