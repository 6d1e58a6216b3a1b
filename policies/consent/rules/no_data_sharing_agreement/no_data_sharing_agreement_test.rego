package consent.rules.no_data_sharing_agreement_test

import data.consent.lib.examples
import data.consent.rules.no_data_sharing_agreement
import data.examples.no_data_sharing_agreement as example

test_bad_example_violates if {
	no_data_sharing_agreement.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	no_data_sharing_agreement.violation == set() with input as example.good
}

test_agreement_of_another_source_does_not_count if {
	no_data_sharing_agreement.violation == {examples.violation(example, {
		"message": "data-sharing agreement \"DSA-2023-004\" is not on file for source \"studio_optin\"",
	})} with input as examples.with_provenance(example.good, {"data_sharing_agreement": "DSA-2023-004"})
}

test_agreement_expired_at_the_evaluation_time if {
	doc := examples.with_request(example.good, {"evaluated_at": "2028-12-31T23:59:59Z"})
	no_data_sharing_agreement.violation == {examples.violation(example, {
		"message": "data-sharing agreement \"DSA-2024-017\" with source \"studio_optin\" expired at 2028-12-31T23:59:59Z",
	})} with input as doc
	no_data_sharing_agreement.violation == set() with input as examples.with_request(example.good, {"evaluated_at": "2028-12-31T23:59:58Z"})
}

test_agreement_must_cover_the_purpose if {
	doc := examples.with_request(example.good, {"purpose": "analytics"})
	no_data_sharing_agreement.violation == {examples.violation(example, {
		"message": "data-sharing agreement \"DSA-2024-017\" with source \"studio_optin\" covers purposes [\"face_recognition_training\"], not \"analytics\"",
	})} with input as doc
}

test_agreement_for_an_ancestor_covers_the_purpose if {
	doc := examples.with_provenance(
		example.good,
		{"source": "stock", "data_sharing_agreement": "DSA-2023-004", "license": "CC-BY-4.0"},
	)
	no_data_sharing_agreement.violation == set() with input as doc
}

test_all_reasons_in_one_violation if {
	doc := examples.with_request(example.good, {"purpose": "analytics", "evaluated_at": "2029-01-01T00:00:00Z"})
	no_data_sharing_agreement.violation == {examples.violation(example, {"message": concat("; ", [
		"data-sharing agreement \"DSA-2024-017\" with source \"studio_optin\" covers purposes [\"face_recognition_training\"], not \"analytics\"",
		"data-sharing agreement \"DSA-2024-017\" with source \"studio_optin\" expired at 2028-12-31T23:59:59Z",
	])})} with input as doc
}

test_first_party_source_needs_no_agreement if {
	no_data_sharing_agreement.violation == set() with input as example.bad
		with data.consent.reference.sources.sources as {"studio_optin": {"party": "first_party", "agreements": {}}}
}

test_unapproved_source_is_left_to_source_not_approved if {
	no_data_sharing_agreement.violation == set() with input as examples.with_provenance(example.bad, {"source": "okcupid"})
}

test_no_manifest_no_violation if {
	no_data_sharing_agreement.violation == set() with input as examples.without_manifest(example.bad)
}
