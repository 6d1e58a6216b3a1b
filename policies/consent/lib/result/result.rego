# METADATA
# title: Violations built from rule metadata
# description: >-
#   Every rule reports its findings through violation/3, so that a violation's rule id, title,
#   severity, remediation, regulation references and recoverable flag come from the rule's
#   package METADATA and nowhere else.
package consent.lib.result

# METADATA
# description: >-
#   The violation of the rule whose rego.metadata.chain() is chain, against the partition at
#   index, with the rule's own message. Incomplete metadata still yields a violation (fail
#   closed): the missing fields fall back to the strictest values.
violation(chain, index, message) := {
	"partition": index,
	"rule_id": object.get(custom, "id", concat(".", path)),
	"title": object.get(annotations, "title", concat(".", path)),
	"severity": object.get(custom, "severity", "critical"),
	"message": message,
	"remediation": object.get(custom, "remediation", ""),
	"regulation": object.get(custom, "regulation", []),
	"recoverable": object.get(custom, "recoverable", false),
} if {
	annotations := _package_annotations(chain)
	custom := object.get(annotations, "custom", {})
	path := chain[count(chain) - 1].path
}

_package_annotations(chain) := entry.annotations if {
	some entry in chain
	entry.annotations.scope == "package"
} else := {}
