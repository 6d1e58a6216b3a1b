package consent.rules.source_not_approved_test

import data.consent.lib.examples
import data.consent.rules.source_not_approved
import data.examples.source_not_approved as example

test_bad_example_violates if {
	source_not_approved.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	source_not_approved.violation == set() with input as example.good
}

test_every_listed_source_is_approved if {
	every source in ["studio_optin", "stock"] {
		source_not_approved.violation == set() with input as examples.with_provenance(example.bad, {"source": source})
	}
}

test_no_manifest_no_violation if {
	source_not_approved.violation == set() with input as examples.without_manifest(example.bad)
}
