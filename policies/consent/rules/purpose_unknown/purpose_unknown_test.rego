package consent.rules.purpose_unknown_test

import data.consent.lib.examples
import data.consent.rules.purpose_unknown
import data.examples.purpose_unknown as example

test_bad_example_violates if {
	purpose_unknown.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	purpose_unknown.violation == set() with input as example.good
}

test_every_partition_is_denied_even_without_manifest if {
	doc := json.patch(example.bad, [{"op": "add", "path": "/partitions/-", "value": examples.without_manifest(example.bad).partitions[0]}])
	purpose_unknown.violation == {examples.violation(example, {}), examples.violation(example, {"partition": 1})} with input as doc
}

test_missing_purpose_is_unknown if {
	doc := examples.without(example.good, ["/request/purpose"])
	purpose_unknown.violation == {examples.violation(example, {"message": concat("", [
		"purpose \"\" is not in the purpose taxonomy (known purposes: analytics, biometric_model_training, ",
		"commercial_model_training, face_recognition_training, model_training, research_model_training, service_delivery)",
	])})} with input as doc
}
