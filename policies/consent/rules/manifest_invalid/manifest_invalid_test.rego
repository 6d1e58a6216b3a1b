package consent.rules.manifest_invalid_test

import data.consent.lib.examples
import data.consent.rules.manifest_invalid
import data.examples.manifest_invalid as example

test_bad_example_violates if {
	manifest_invalid.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	manifest_invalid.violation == set() with input as example.good
}

test_missing_manifest_without_problems if {
	doc := examples.with_partition(example.bad, {"manifest_problems": []})
	manifest_invalid.violation == {examples.violation(example, {
		"message": "partition \"profile_photos/source=studio_optin/shard=bad\" has no manifest",
	})} with input as doc
}

test_absent_manifest_key_is_missing if {
	doc := examples.without(example.good, ["/partitions/0/manifest", "/partitions/0/manifest_problems"])
	manifest_invalid.violation == {examples.violation(example, {
		"message": "partition \"profile_photos/source=studio_optin/shard=good\" has no manifest",
	})} with input as doc
}

test_problem_without_field_names_the_file if {
	doc := examples.with_partition(example.bad, {"manifest_problems": [{"file": "s3://b/_consent.json", "field": null, "message": "not JSON"}]})
	manifest_invalid.violation == {examples.violation(example, {"message": "the manifest is invalid: s3://b/_consent.json: not JSON"})} with input as doc
}

test_problems_deny_even_with_a_manifest if {
	problems := example.bad.partitions[0].manifest_problems
	doc := examples.with_partition(example.good, {"manifest_problems": problems})
	manifest_invalid.violation == {examples.violation(example, {})} with input as doc
}
