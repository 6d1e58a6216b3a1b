# METADATA
# title: Consent gate decision
# description: >-
#   The single entrypoint. It collects the violations of every rule package under
#   data.consent.rules (each package's `violation` set; adding a rule needs no registration)
#   and returns the decision for all partitions of the input, shaped like
#   airflow_consent.models.PolicyDecision.
package consent.main

import data.consent.rules

# METADATA
# description: >-
#   {"allow": bool, "partitions": [{"id", "allow", "violations"}]}: one entry per input
#   partition in input order; allow is true only when there is at least one partition and
#   every partition is allowed.
# entrypoint: true
decision := {
	"allow": _allow,
	"partitions": _partitions,
}

default _allow := false

_allow if {
	count(_partitions) > 0
	every partition in _partitions {
		partition.allow == true
	}
}

_partitions := [_partition_decision(index, partition) | some index, partition in input.partitions]

_partition_decision(index, partition) := {
	"id": partition.id,
	"allow": count(violations) == 0,
	"violations": violations,
} if {
	violations := _in_order(object.get(_violations, index, set()))
}

# Partition index → the violations all rules found against it, without the index.
_violations[found.partition] contains object.remove(found, {"partition"}) if {
	some found in rules[_].violation
}

# By rule id, then message: the same input always yields the same list.
_in_order(violations) := [entry[2] | some entry in sort([[v.rule_id, v.message, v] | some v in violations])]
