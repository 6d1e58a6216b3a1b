package consent.rules.manifest_invalid_test

import data.consent.lib.examples
import data.consent.rules.manifest_invalid
import data.examples.manifest_invalid as example

test_bad_example_violates if {
	manifest_invalid.violation == {object.union(example.expected, {"partition": 0})} with input as example.bad
}

test_good_example_passes if {
	manifest_invalid.violation == set() with input as example.good
}

test_missing_manifest_without_problems if {
	doc := examples.with_partition(example.bad, {"manifest_problems": []})
	_messages(doc) == {"partition \"profile_photos/source=studio_optin/shard=bad\" has no manifest"}
}

test_absent_manifest_key_is_missing if {
	partition := object.remove(example.good.partitions[0], {"manifest", "manifest_problems"})
	doc := json.patch(example.good, [{"op": "replace", "path": "/partitions/0", "value": partition}])
	_messages(doc) == {"partition \"profile_photos/source=studio_optin/shard=good\" has no manifest"}
}

test_problem_without_field_names_the_file if {
	doc := examples.with_partition(example.bad, {"manifest_problems": [{"file": "s3://b/_consent.json", "field": null, "message": "not JSON"}]})
	_messages(doc) == {"the manifest is invalid: s3://b/_consent.json: not JSON"}
}

test_problems_deny_even_with_a_manifest if {
	problems := example.bad.partitions[0].manifest_problems
	count(manifest_invalid.violation) == 1 with input as examples.with_partition(example.good, {"manifest_problems": problems})
}

_messages(doc) := {violation.message | some violation in found} if {
	found := manifest_invalid.violation with input as doc
}
