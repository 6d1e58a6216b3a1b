"""Airflow finds the provider through its entry point and accepts what it declares."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_consent.provider_info import get_provider_info


def test_entry_point_is_registered():
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_consent")]
    assert entry.load() is get_provider_info


def test_provider_info_matches_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_manager_knows_the_opa_connection_type():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "airflow-consent" in ProvidersManager().providers
    hook = ProvidersManagerTaskRuntime().hooks["opa"]
    assert (hook.hook_class_name, hook.connection_type) == ("airflow_consent.hooks.opa.OpaHook", "opa")


def test_connection_form_declares_the_custom_fields():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert {"timeout", "retries", "ca_bundle"} <= {name.split("__")[-1] for name in manager.connection_form_widgets}
    assert manager.field_behaviours["opa"]["relabeling"]["password"] == "Bearer token"
