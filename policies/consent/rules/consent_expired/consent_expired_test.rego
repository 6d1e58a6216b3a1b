package consent.rules.consent_expired_test

import data.consent.lib.examples
import data.consent.rules.consent_expired
import data.examples.consent_expired as example

test_bad_example_violates if {
	consent_expired.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	consent_expired.violation == set() with input as example.good
}

test_expiry_at_the_evaluation_time_has_expired if {
	consent_expired.violation == {examples.violation(example, {
		"message": "consent expired at 2026-11-02T09:00:00Z, not after the evaluation time 2026-11-02T09:00:00Z",
	})} with input as _expiring(example.good.request.evaluated_at)
}

test_expiry_one_nanosecond_after_the_evaluation_time_is_valid if {
	consent_expired.violation == set() with input as _expiring("2026-11-02T09:00:00.000000001Z")
}

test_offsets_compare_as_instants if {
	# 10:00+01:00 is 09:00Z, the evaluation time.
	consent_expired.violation == {examples.violation(example, {
		"message": "consent expired at 2026-11-02T10:00:00+01:00, not after the evaluation time 2026-11-02T09:00:00Z",
	})} with input as _expiring("2026-11-02T10:00:00+01:00")
	consent_expired.violation == set() with input as _expiring("2026-11-02T10:00:01+01:00")
}

test_no_expiry_never_expires if {
	consent_expired.violation == set() with input as _expiring(null)
}

test_no_manifest_no_violation if {
	consent_expired.violation == set() with input as examples.without_manifest(example.bad)
}

_expiring(expires_at) := examples.with_consent(example.good, {"expires_at": expires_at})
