package consent.lib.evidence_test

import data.consent.lib.evidence

_partition(partition_evidence) := {"id": "p", "evidence": partition_evidence}

test_measured_evidence_is_listed_by_index if {
	doc := {"partitions": [
		_partition({}),
		_partition({"content": {"rows": 3}, "expectations": {"success": true}}),
		{"id": "no evidence key"},
		_partition({"content": null, "expectations": null}),
	]}
	evidence.contents == {1: {"rows": 3}} with input as doc
	evidence.expectations == {1: {"success": true}} with input as doc
}
