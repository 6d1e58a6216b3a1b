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

test_version_1_single_license_is_judged if {
	doc := examples.with_provenance(example.good, {"license": "CC-BY-NC-4.0"})
	license_forbids_purpose.violation == {examples.violation(example, {})} with input as doc
}

test_unknown_license_is_left_to_license_unknown if {
	doc := examples.with_provenance(example.good, {"license": "okcupid-terms-of-servic"})
	license_forbids_purpose.violation == set() with input as doc
}

test_loosely_spelt_license_is_judged_as_the_license_it_names if {
	doc := examples.with_provenance(example.good, {"license": "cc by_nc 4.0"})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("", [
		"license \"cc by_nc 4.0\" (CC-BY-NC-4.0) of source \"studio_optin\" does not permit commercial use ",
		"and purpose \"face_recognition_training\" is commercial",
	])})} with input as doc
}

test_non_commercial_license_permits_non_commercial_purpose if {
	license_forbids_purpose.violation == set() with input as examples.with_request(example.bad, {"purpose": "research_model_training"})
}

test_license_purposes_must_cover_the_purpose if {
	doc := examples.with_request(example.good, {"purpose": "analytics"})
	license_forbids_purpose.violation == {examples.violation(example, {
		"message": "license \"studio-optin-model-release\" of source \"studio_optin\" permits purposes [\"model_training\"], not \"analytics\"",
	})} with input as doc
}

test_unclassified_spdx_license_permits_no_purpose if {
	doc := examples.with_request(examples.with_provenance(example.good, {"license": "Beerware"}), {"purpose": "research_model_training"})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("", [
		"license \"Beerware\" of source \"studio_optin\" permits no purpose ",
		"(family \"unclassified\": not classified for data use: classify it in consent/reference/license_terms)",
	])})} with input as doc
}

test_an_entry_without_purposes_permits_none if {
	doc := examples.with_request(examples.with_provenance(example.good, {"license": "org-terms"}), {"purpose": "research_model_training"})
	license_forbids_purpose.violation == {examples.violation(example, {
		"message": "license \"org-terms\" of source \"studio_optin\" permits no purpose (family \"\": )",
	})} with input as doc
		with data.consent.reference.license_terms.license_terms["org-terms"] as {"commercial": false}
}

test_license_terms_override_the_spdx_classification if {
	doc := examples.with_provenance(example.good, {"license": "CC-BY-NC-4.0"})
	license_forbids_purpose.violation == set() with input as doc
		with data.consent.reference.license_terms.license_terms["CC-BY-NC-4.0"] as {"commercial": true, "purposes": null}
}

test_all_reasons_and_licenses_in_one_violation if {
	doc := examples.with_request(example.bad, {"purpose": "analytics"})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("; ", [
		"license \"CC-BY-NC-4.0\" of source \"studio_optin\" does not permit commercial use and purpose \"analytics\" is commercial",
		"license \"CC-BY-NC-4.0\" of source \"studio_optin\" permits purposes [\"research_model_training\"], not \"analytics\"",
		"license \"studio-optin-model-release\" of source \"studio_optin\" permits purposes [\"model_training\"], not \"analytics\"",
	])})} with input as doc
		with data.consent.reference.licenses.licenses["CC-BY-NC-4.0"] as {"commercial": false, "purposes": ["research_model_training"]}
}

test_generating_model_terms_must_permit_the_purpose if {
	doc := examples.with_provenance(example.bad, {
		"licenses": ["CC0-1.0"],
		"generated_by": {"model": "gpt-4o-2024-08-06", "provider": "openai", "terms": "openai-terms"},
	})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("", [
		"license \"openai-terms\" of generating model \"gpt-4o-2024-08-06\" permits purposes ",
		"[\"analytics\", \"service_delivery\"], not \"face_recognition_training\"",
	])})} with input as doc
}

test_every_upstream_license_must_permit_the_purpose if {
	doc := examples.with_provenance(example.bad, {
		"licenses": ["CC-BY-4.0"],
		"upstream": [
			{"name": "wiki-faces", "licenses": ["CC-BY-SA-4.0"]},
			{"name": "lfw-subset", "licenses": ["MIT", "CC-BY-NC-SA-4.0"]},
		],
	})
	license_forbids_purpose.violation == {examples.violation(example, {"message": concat("", [
		"license \"CC-BY-NC-SA-4.0\" of upstream dataset \"lfw-subset\" does not permit commercial use ",
		"and purpose \"face_recognition_training\" is commercial",
	])})} with input as doc
}

test_unknown_purpose_is_left_to_purpose_unknown if {
	license_forbids_purpose.violation == set() with input as examples.with_request(example.good, {"purpose": "emotion_recognition_training"})
}

test_no_manifest_no_violation if {
	license_forbids_purpose.violation == set() with input as examples.without_manifest(example.bad)
}
