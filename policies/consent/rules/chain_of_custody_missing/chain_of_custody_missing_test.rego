package consent.rules.chain_of_custody_missing_test

import data.consent.lib.examples
import data.consent.rules.chain_of_custody_missing
import data.examples.chain_of_custody_missing as example

test_bad_example_violates if {
	chain_of_custody_missing.violation == {object.union(example.expected, {"partition": 0})} with input as example.bad
}

test_good_example_passes if {
	chain_of_custody_missing.violation == set() with input as example.good
}

test_absent_chain_is_missing if {
	provenance := object.remove(example.good.partitions[0].manifest.provenance, {"chain_of_custody"})
	doc := json.patch(example.good, [{"op": "replace", "path": "/partitions/0/manifest/provenance", "value": provenance}])
	count(chain_of_custody_missing.violation) == 1 with input as doc
}

test_no_manifest_no_violation if {
	chain_of_custody_missing.violation == set() with input as examples.without_manifest(example.bad)
}
