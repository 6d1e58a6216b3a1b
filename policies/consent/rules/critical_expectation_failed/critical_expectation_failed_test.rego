package consent.rules.critical_expectation_failed_test

import data.consent.lib.examples
import data.consent.rules.critical_expectation_failed as rule
import data.examples.critical_expectation_failed as example

test_bad_example_violates if {
	rule.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes_despite_a_failed_non_critical_expectation if {
	count(example.good.partitions[0].evidence.expectations.failed) > 0
	rule.violation == set() with input as example.good
}

test_every_critical_failure_is_named if {
	failed := [
		{"type": "expect_table_row_count_to_be_between", "id": null, "column": null, "critical": true, "statistics": {"observed_value": 0}},
		{"type": "expect_column_values_to_be_unique", "id": "x", "column": "photo_id", "critical": true, "statistics": {}},
	]
	rule.violation == {examples.violation(example, {"message": concat("", [
		"consent-critical expectation(s) of suite \"profile_photos\" (/opt/airflow/dags/datasets/profile_photos.expectations.json) failed: ",
		"expect_table_row_count_to_be_between {\"observed_value\": 0}; ",
		"expect_column_values_to_be_unique on column \"photo_id\" {}",
	])})} with input as _with_failed(failed)
}

test_not_judged_without_a_suite if {
	rule.violation == set() with input as examples.with_evidence(example.bad, {"expectations": null})
}

_with_failed(failed) := json.patch(example.good, [{
	"op": "replace",
	"path": "/partitions/0/evidence/expectations/failed",
	"value": failed,
}])
