"""The committed input schema is the one the models generate."""

from airflow_consent.schema import input_schema_text, schema_path


def test_input_schema_matches_the_models():
    assert schema_path().read_text() == input_schema_text(), (
        "policies/schemas/input.json is stale: run `.venv/bin/python -m airflow_consent.schema`"
    )


def test_schema_has_no_construct_opa_cannot_type_check():
    text = input_schema_text()
    assert "$ref" not in text
    assert '"type": "null"' not in text
