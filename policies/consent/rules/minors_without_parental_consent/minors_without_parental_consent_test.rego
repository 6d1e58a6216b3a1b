package consent.rules.minors_without_parental_consent_test

import data.consent.lib.examples
import data.consent.rules.minors_without_parental_consent
import data.examples.minors_without_parental_consent as example

test_bad_example_violates if {
	minors_without_parental_consent.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	minors_without_parental_consent.violation == set() with input as example.good
}

test_parental_consent_covers_minors if {
	minors_without_parental_consent.violation == set() with input as examples.with_consent(example.bad, {"parental_consent": true})
}

test_no_manifest_no_violation if {
	minors_without_parental_consent.violation == set() with input as examples.without_manifest(example.bad)
}
