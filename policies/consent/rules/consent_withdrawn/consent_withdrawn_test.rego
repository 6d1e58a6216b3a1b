package consent.rules.consent_withdrawn_test

import data.consent.lib.examples
import data.consent.rules.consent_withdrawn
import data.examples.consent_withdrawn as example

test_bad_example_violates if {
	consent_withdrawn.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	consent_withdrawn.violation == set() with input as example.good
}

test_withdrawal_at_the_evaluation_time_counts if {
	consent_withdrawn.violation == {examples.violation(example, {
		"message": "consent was withdrawn at 2026-11-02T09:00:00Z, not after the evaluation time 2026-11-02T09:00:00Z",
	})} with input as _withdrawn(example.good.request.evaluated_at)
}

test_withdrawal_after_the_evaluation_time_does_not_count_yet if {
	consent_withdrawn.violation == set() with input as _withdrawn("2026-11-02T09:00:00.000000001Z")
}

test_no_manifest_no_violation if {
	consent_withdrawn.violation == set() with input as examples.without_manifest(example.bad)
}

_withdrawn(withdrawn_at) := examples.with_consent(example.good, {"withdrawn_at": withdrawn_at})
