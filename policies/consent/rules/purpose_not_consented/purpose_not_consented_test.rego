package consent.rules.purpose_not_consented_test

import data.consent.lib.examples
import data.consent.rules.purpose_not_consented
import data.examples.purpose_not_consented as example

test_bad_example_violates if {
	purpose_not_consented.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	purpose_not_consented.violation == set() with input as example.good
}

test_consent_to_an_ancestor_covers_the_purpose if {
	every granted in ["model_training", "commercial_model_training", "biometric_model_training"] {
		purpose_not_consented.violation == set() with input as examples.with_consent(example.good, {"purposes": [granted]})
	}
}

test_consent_to_a_sibling_or_descendant_does_not_cover if {
	every granted in ["research_model_training", "face_recognition_training"] {
		purpose_not_consented.violation == {examples.violation(example, {"message": sprintf(
			"purpose \"commercial_model_training\" is not consented: the consented purposes [%q] include neither it nor any of its ancestors",
			[granted],
		)})} with input as _requesting("commercial_model_training", {"purposes": [granted]})
	}
}

test_contract_basis_does_not_permit_training if {
	doc := examples.with_consent(example.good, {"legal_basis": "contract", "purposes": ["service_delivery"]})
	purpose_not_consented.violation == {examples.violation(example, {"message": concat("", [
		"purpose \"face_recognition_training\" is not consented: ",
		"legal basis \"contract\" does not permit biometric or model_training purposes; ",
		"the consented purposes [\"service_delivery\"] include neither it nor any of its ancestors",
	])})} with input as doc
}

test_legitimate_interest_covers_analytics_not_training if {
	purpose_not_consented.violation == set() with input as _requesting(
		"analytics",
		{"purposes": ["analytics"], "legal_basis": "legitimate_interest"},
	)
	purpose_not_consented.violation == {examples.violation(example, {"message": concat("", [
		"purpose \"research_model_training\" is not consented: ",
		"legal basis \"legitimate_interest\" does not permit model_training purposes",
	])})} with input as _requesting("research_model_training", {"purposes": ["model_training"], "legal_basis": "legitimate_interest"})
}

test_unknown_purpose_is_left_to_purpose_unknown if {
	purpose_not_consented.violation == set() with input as _requesting("emotion_recognition_training", {"purposes": ["service_delivery"]})
}

test_no_manifest_no_violation if {
	purpose_not_consented.violation == set() with input as examples.without_manifest(example.bad)
}

_requesting(purpose, consent) := examples.with_request(
	examples.with_consent(example.good, consent),
	{"purpose": purpose},
)
