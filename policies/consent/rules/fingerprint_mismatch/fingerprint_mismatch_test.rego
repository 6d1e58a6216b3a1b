package consent.rules.fingerprint_mismatch_test

import data.consent.lib.examples
import data.consent.rules.fingerprint_mismatch
import data.examples.fingerprint_mismatch as example

test_bad_example_violates if {
	fingerprint_mismatch.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	fingerprint_mismatch.violation == set() with input as example.good
}

test_no_attestation_nothing_to_compare if {
	fingerprint_mismatch.violation == set() with input as examples.with_provenance(example.bad, {"attested_digest": null})
}

test_no_manifest_no_violation if {
	fingerprint_mismatch.violation == set() with input as examples.without_manifest(example.bad)
}
