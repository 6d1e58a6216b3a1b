# METADATA
# title: Rows collected after consent ended
# description: >-
#   No row may have been collected at or after its subject's consent was withdrawn or expired
#   (per-row times in the data, compared by the gate). Judged only where the dataset's
#   configuration names those columns.
# custom:
#   id: EVIDENCE-003
#   severity: critical
#   regulation:
#     - GDPR Art. 6(1)(a)
#     - GDPR Art. 7(3)
#     - BIPA 740 ILCS 14/15(b)
#   remediation: >-
#     Remove the rows collected after their subject's consent ended, fix the collection
#     process that kept collecting, and re-deliver the partition.
#   recoverable: true
package consent.rules.collected_after_consent_ended

import data.consent.lib.evidence
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, content in evidence.contents
	parts := [sprintf("%d row(s) collected at or after their subject's consent %s", [rows, ended]) |
		some field, ended in _ended
		rows := object.get(content, field, null)
		is_number(rows)
		rows > 0
	]
	count(parts) > 0
	message := concat("; ", parts)
}

_ended := {"collected_after_expiry": "expired", "collected_after_withdrawal": "was withdrawn"}
