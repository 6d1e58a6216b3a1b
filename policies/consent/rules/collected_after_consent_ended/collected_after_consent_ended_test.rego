package consent.rules.collected_after_consent_ended_test

import data.consent.rules.collected_after_consent_ended as rule
import data.examples.collected_after_consent_ended as example

test_bad_example_violates if {
	rule.violation == {object.union(example.expected, {"partition": 0})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_withdrawal_alone if {
	_messages(_with_content({"collected_after_withdrawal": 5})) == {
		"5 row(s) collected at or after their subject's consent was withdrawn",
	}
}

test_not_judged_when_the_times_are_not_configured if {
	rule.violation == set() with input as _with_content({"collected_after_withdrawal": null, "collected_after_expiry": null})
	rule.violation == set() with input as _with_evidence(example.bad, {})
}

_with_content(fields) := json.patch(example.good, [{
	"op": "replace",
	"path": "/partitions/0/evidence/content",
	"value": object.union(example.good.partitions[0].evidence.content, fields),
}])

_messages(doc) := {violation.message | some violation in found} if {
	found := rule.violation with input as doc
}

_with_evidence(doc, evidence) := json.patch(doc, [{"op": "replace", "path": "/partitions/0/evidence", "value": evidence}])
