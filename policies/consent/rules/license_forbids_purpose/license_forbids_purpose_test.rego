package consent.rules.license_forbids_purpose_test

import data.consent.lib.examples
import data.consent.rules.license_forbids_purpose
import data.examples.license_forbids_purpose as example

test_bad_example_violates if {
	license_forbids_purpose.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	license_forbids_purpose.violation == set() with input as example.good
}

test_unknown_license_is_forbidden if {
	doc := examples.with_provenance(example.good, {"license": "okcupid-terms-of-service"})
	license_forbids_purpose.violation == {examples.violation(example, {
		"message": "license \"okcupid-terms-of-service\" of source \"studio_optin\" is not a known license",
	})} with input as doc
}

test_non_commercial_license_permits_non_commercial_purpose if {
	license_forbids_purpose.violation == set() with input as examples.with_request(example.bad, {"purpose": "research_model_training"})
}

test_license_purposes_must_cover_the_purpose if {
	doc := examples.with_request(example.good, {"purpose": "analytics"})
	license_forbids_purpose.violation == {examples.violation(example, {
		"message": "license \"studio-optin-model-release\" permits purposes [\"model_training\"], not \"analytics\"",
	})} with input as doc
}

test_all_reasons_in_one_violation if {
	doc := examples.with_request(example.bad, {"purpose": "analytics"})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("; ", [
		"license \"CC-BY-NC-4.0\" does not permit commercial use and purpose \"analytics\" is commercial",
		"license \"CC-BY-NC-4.0\" permits purposes [\"research_model_training\"], not \"analytics\"",
	])})} with input as doc
		with data.consent.reference.licenses.licenses["CC-BY-NC-4.0"] as {"commercial": false, "purposes": ["research_model_training"]}
}

test_unknown_purpose_is_left_to_purpose_unknown if {
	license_forbids_purpose.violation == set() with input as examples.with_request(example.good, {"purpose": "emotion_recognition_training"})
}

test_no_manifest_no_violation if {
	license_forbids_purpose.violation == set() with input as examples.without_manifest(example.bad)
}
