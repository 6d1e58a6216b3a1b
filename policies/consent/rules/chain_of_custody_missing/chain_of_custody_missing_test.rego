package consent.rules.chain_of_custody_missing_test

import data.consent.lib.examples
import data.consent.rules.chain_of_custody_missing
import data.examples.chain_of_custody_missing as example

test_bad_example_violates if {
	chain_of_custody_missing.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	chain_of_custody_missing.violation == set() with input as example.good
}

test_absent_chain_is_missing if {
	doc := examples.without(example.good, ["/partitions/0/manifest/provenance/chain_of_custody"])
	chain_of_custody_missing.violation == {examples.violation(example, {
		"message": "no chain of custody is recorded for the data acquired from source \"studio_optin\" at 2024-04-01T12:00:00Z",
	})} with input as doc
}

test_no_manifest_no_violation if {
	chain_of_custody_missing.violation == set() with input as examples.without_manifest(example.bad)
}
