package consent.rules.biometric_without_opt_in_test

import data.consent.lib.examples
import data.consent.rules.biometric_without_opt_in
import data.examples.biometric_without_opt_in as example

test_bad_example_violates if {
	biometric_without_opt_in.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	biometric_without_opt_in.violation == set() with input as example.good
}

test_non_biometric_purpose_needs_no_opt_in if {
	biometric_without_opt_in.violation == set() with input as examples.with_request(example.bad, {"purpose": "research_model_training"})
}

test_non_biometric_data_needs_no_opt_in if {
	biometric_without_opt_in.violation == set() with input as examples.with_consent(example.bad, {"biometric": false})
}

test_missing_opt_in_field_means_no_opt_in if {
	doc := examples.without(example.good, ["/partitions/0/manifest/consent/biometric_opt_in"])
	biometric_without_opt_in.violation == {examples.violation(example, {})} with input as doc
}

test_no_manifest_no_violation if {
	biometric_without_opt_in.violation == set() with input as examples.without_manifest(example.bad)
}
