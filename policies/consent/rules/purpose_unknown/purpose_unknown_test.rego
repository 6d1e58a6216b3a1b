package consent.rules.purpose_unknown_test

import data.consent.lib.examples
import data.consent.rules.purpose_unknown
import data.examples.purpose_unknown as example

test_bad_example_violates if {
	purpose_unknown.violation == {object.union(example.expected, {"partition": 0})} with input as example.bad
}

test_good_example_passes if {
	purpose_unknown.violation == set() with input as example.good
}

test_every_partition_is_denied_even_without_manifest if {
	doc := json.patch(example.bad, [{"op": "add", "path": "/partitions/-", "value": examples.without_manifest(example.bad).partitions[0]}])
	{v.partition | some v in purpose_unknown.violation} == {0, 1} with input as doc
}

test_missing_purpose_is_unknown if {
	doc := json.patch(example.good, [{"op": "remove", "path": "/request/purpose"}])
	count(purpose_unknown.violation) == 1 with input as doc
}
