package consent.rules.evidence_unmeasurable_test

import data.consent.lib.examples
import data.consent.rules.evidence_unmeasurable as rule
import data.examples.evidence_unmeasurable as example

test_bad_example_violates if {
	rule.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_a_problem_without_a_field_names_the_file if {
	doc := examples.with_partition(example.bad, {"evidence_problems": [{"file": "file:///d/p", "field": null, "message": "the partition has no rows"}]})
	rule.violation == {examples.violation(example, {
		"message": "the evidence could not be measured: file:///d/p: the partition has no rows",
	})} with input as doc
}

test_a_partition_without_the_key_has_no_problems if {
	rule.violation == set() with input as examples.without(example.bad, ["/partitions/0/evidence_problems"])
}
