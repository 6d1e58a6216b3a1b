package consent.rules.revoked_subjects_present_test

import data.consent.lib.examples
import data.consent.rules.revoked_subjects_present as rule
import data.examples.revoked_subjects_present as example

test_bad_example_violates if {
	rule.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_not_judged_without_a_revocation_list if {
	rule.violation == set() with input as examples.with_content(example.bad, {"revoked": null})
	rule.violation == set() with input as examples.with_evidence(example.bad, {})
}

test_each_partition_is_judged_on_its_own if {
	doc := json.patch(example.bad, [{"op": "add", "path": "/partitions/-", "value": example.good.partitions[0]}])
	rule.violation == {examples.violation(example, {})} with input as doc
}
