package consent.lib.partitions_test

import data.consent.lib.partitions

test_only_partitions_with_a_manifest if {
	doc := {"partitions": [
		{"id": "a", "manifest": {"consent": {}}},
		{"id": "b", "manifest": null},
		{"id": "c"},
		{"id": "d", "manifest": {"provenance": {}}},
	]}
	object.keys(partitions.manifests) == {0, 3} with input as doc
}
