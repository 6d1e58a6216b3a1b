package consent.main_test

import data.consent.lib.examples
import data.consent.main

test_every_good_example_is_allowed if {
	every example in data.examples {
		main.decision == {
			"allow": true,
			"partitions": [{"id": example.good.partitions[0].id, "allow": true, "violations": []}],
		} with input as example.good
	}
}

test_every_bad_example_is_denied_with_its_violation if {
	every example in data.examples {
		_denied_with(example.bad, example.expected)
	}
}

test_missing_manifest_is_the_only_finding if {
	main.decision.partitions[0].violations == [data.examples.manifest_invalid.expected] with input as data.examples.manifest_invalid.bad
}

test_no_partitions_is_not_allowed if {
	main.decision == {"allow": false, "partitions": []} with input as {"request": data.examples.consent_expired.good.request, "partitions": []}
}

test_one_entry_per_partition_in_input_order if {
	good := data.examples.consent_expired.good.partitions[0]
	expired := data.examples.consent_expired.bad.partitions[0]
	doc := {"request": data.examples.consent_expired.good.request, "partitions": [expired, good, expired]}
	decision := main.decision with input as doc
	decision.allow == false
	[[p.id, p.allow] | some p in decision.partitions] == [[expired.id, false], [good.id, true], [expired.id, false]]
	decision.partitions[0].violations == [data.examples.consent_expired.expected]
	decision.partitions[2].violations == [data.examples.consent_expired.expected]
}

test_violations_are_ordered_by_rule_id if {
	doc := examples.with_provenance(
		examples.with_consent(data.examples.consent_expired.bad, {"minors": true, "biometric_opt_in": false}),
		{"chain_of_custody": []},
	)
	decision := main.decision with input as doc
	[v.rule_id | some v in decision.partitions[0].violations] == ["CONSENT-002", "CONSENT-003", "CONSENT-005", "PROV-004"]
}

_denied_with(doc, expected) if {
	decision := main.decision with input as doc
	decision.allow == false
	decision.partitions[0].allow == false
	expected in decision.partitions[0].violations
}
