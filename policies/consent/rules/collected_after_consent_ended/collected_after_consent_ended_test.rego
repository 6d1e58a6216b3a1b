package consent.rules.collected_after_consent_ended_test

import data.consent.lib.examples
import data.consent.rules.collected_after_consent_ended as rule
import data.examples.collected_after_consent_ended as example

test_bad_example_violates if {
	rule.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	rule.violation == set() with input as example.good
}

test_withdrawal_alone if {
	rule.violation == {examples.violation(example, {
		"message": "5 row(s) collected at or after their subject's consent was withdrawn",
	})} with input as examples.with_content(example.good, {"collected_after_withdrawal": 5})
}

test_not_judged_when_the_times_are_not_configured if {
	rule.violation == set() with input as examples.with_content(example.good, {"collected_after_withdrawal": null, "collected_after_expiry": null})
	rule.violation == set() with input as examples.with_evidence(example.bad, {})
}
