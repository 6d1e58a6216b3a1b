# METADATA
# title: Purpose taxonomy
# description: >-
#   Queries over the purpose taxonomy (data.consent.reference.purposes): which purposes exist,
#   their ancestry through "parent" links, and their kinds (commercial, biometric,
#   model_training). Consent to a purpose covers all of its descendants.
package consent.lib.purposes

import data.consent.reference.purposes.purposes as taxonomy

# METADATA
# description: The purpose flags a legal basis, a license or a rule can restrict.
flags := {"biometric", "commercial", "model_training"}

# METADATA
# description: Every purpose id in the taxonomy, sorted.
ids := sort(object.keys(taxonomy))

# METADATA
# description: True when purpose is in the taxonomy.
known(purpose) if taxonomy[purpose]

# METADATA
# description: The purpose and all of its ancestors; empty for a purpose not in the taxonomy.
lineage(purpose) := graph.reachable(_parents, {purpose})

# METADATA
# description: The request's purpose and its ancestors (computed once per query).
requested_lineage := lineage(input.request.purpose)

# METADATA
# description: The flags set on the request's purpose (computed once per query).
requested_kinds := kinds(input.request.purpose)

# METADATA
# description: True when the request's purpose is in the taxonomy.
requested_known if known(input.request.purpose)

# METADATA
# description: >-
#   True when consent (or an agreement, or a license) to any purpose in granted covers the
#   request's purpose: granting a purpose grants its descendants.
covers_request(granted) if {
	some grant in granted
	grant in requested_lineage
}

# METADATA
# description: The flags (biometric, commercial, model_training) set on purpose in the taxonomy.
kinds(purpose) := {flag | some flag in flags; taxonomy[purpose][flag] == true}

_parents[id] := {parent | parent := entry.parent; parent != null} if some id, entry in taxonomy
