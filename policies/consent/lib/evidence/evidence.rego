# METADATA
# title: Partitions with evidence
# description: >-
#   The evidence the gate measured in partitions' data (airflow_consent.models.Evidence). A
#   partition whose dataset has no evidence configuration has none, and the evidence rules do
#   not judge it; one whose evidence could not be measured is evidence_unmeasurable's alone.
package consent.lib.evidence

# METADATA
# description: Partition index → content evidence (Arrow), for each partition where it was measured.
contents := {index: content |
	some index, partition in input.partitions
	content := object.get(partition, ["evidence", "content"], null)
	is_object(content)
}

# METADATA
# description: Partition index → Great Expectations results, for each partition where the suite ran.
expectations := {index: results |
	some index, partition in input.partitions
	results := object.get(partition, ["evidence", "expectations"], null)
	is_object(results)
}
