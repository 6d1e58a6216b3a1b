package consent.rules.consent_coverage_below_threshold_test

import data.consent.lib.examples
import data.consent.rules.consent_coverage_below_threshold as rule
import data.examples.consent_coverage_below_threshold as example

test_bad_example_violates if {
	rule.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_a_flag_for_an_ancestor_covers_the_purpose if {
	flags := [{"purposes": ["model_training"], "rows": 1100}, {"purposes": ["biometric_model_training", "service_delivery"], "rows": 100}]
	rule.violation == set() with input as _with_flags(flags)
}

test_a_flag_for_a_descendant_or_sibling_does_not_cover if {
	flags := [{"purposes": ["face_recognition_training"], "rows": 600}, {"purposes": ["research_model_training"], "rows": 600}]
	rule.violation == {examples.violation(example, {
		"message": "0 of 1200 rows (0%) carry consent to \"commercial_model_training\" or an ancestor of it; the threshold for this purpose is 100%",
	})} with input as examples.with_request(_with_flags(flags), {"purpose": "commercial_model_training"})
}

test_the_strictest_threshold_of_the_lineage_applies if {
	rule.threshold == 1 with input as example.good
	rule.threshold == 0.99 with input as examples.with_request(example.good, {"purpose": "research_model_training"})
	rule.threshold == 0.95 with input as examples.with_request(example.good, {"purpose": "analytics"})
}

test_a_purpose_without_a_listed_threshold_gets_the_default if {
	rule.threshold == 0.5 with input as example.good
		with data.consent.reference.coverage.coverage as {"default_threshold": 0.5, "thresholds": {}}
}

test_coverage_at_the_threshold_passes_and_below_it_fails if {
	doc := examples.with_request(
		_with_flags([{"purposes": ["analytics"], "rows": 1140}, {"purposes": [], "rows": 60}]),
		{"purpose": "analytics"},
	)
	rule.violation == set() with input as doc
	rule.violation == {examples.violation(example, {
		"message": "1139 of 1200 rows (94.92%) carry consent to \"analytics\" or an ancestor of it; the threshold for this purpose is 95%",
	})} with input as examples.with_request(
		_with_flags([{"purposes": ["analytics"], "rows": 1139}, {"purposes": [], "rows": 61}]),
		{"purpose": "analytics"},
	)
}

test_not_judged_without_measured_flags if {
	rule.violation == set() with input as _with_flags(null)
	rule.violation == set() with input as examples.with_evidence(example.bad, {})
	rule.violation == set() with input as examples.with_evidence(example.bad, {"content": null})
}

test_not_judged_for_an_unknown_purpose if {
	rule.violation == set() with input as examples.with_request(example.bad, {"purpose": "emotion_recognition_training"})
}

test_empty_partition_is_left_to_evidence_unmeasurable if {
	rule.violation == set() with input as examples.with_content(example.good, {"rows": 0, "consent_flags": []})
}

_with_flags(flags) := examples.with_content(example.good, {"consent_flags": flags})
