package consent.rules.revoked_subjects_present_test

import data.consent.rules.revoked_subjects_present as rule
import data.examples.revoked_subjects_present as example

test_bad_example_violates if {
	rule.violation == {object.union(example.expected, {"partition": 0})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_not_judged_without_a_revocation_list if {
	content := object.union(example.bad.partitions[0].evidence.content, {"revoked": null})
	rule.violation == set() with input as _with_evidence(example.bad, {"content": content})
	rule.violation == set() with input as _with_evidence(example.bad, {})
}

test_each_partition_is_judged_on_its_own if {
	doc := json.patch(example.bad, [{"op": "add", "path": "/partitions/-", "value": example.good.partitions[0]}])
	{v.partition | some v in rule.violation} == {0} with input as doc
}

_with_evidence(doc, evidence) := json.patch(doc, [{"op": "replace", "path": "/partitions/0/evidence", "value": evidence}])
