# METADATA
# title: Example input variants
# description: >-
#   Test helpers: copies of a one-partition example input (policies/examples) with some fields
#   replaced, so a test states only what it changes.
package consent.lib.examples

# METADATA
# description: doc with the request's fields replaced by those in fields.
with_request(doc, fields) := json.patch(doc, [{
	"op": "replace",
	"path": "/request",
	"value": object.union(doc.request, fields),
}])

# METADATA
# description: doc with its first partition's consent fields replaced by those in fields.
with_consent(doc, fields) := json.patch(doc, [{
	"op": "replace",
	"path": "/partitions/0/manifest/consent",
	"value": object.union(doc.partitions[0].manifest.consent, fields),
}])

# METADATA
# description: doc with its first partition's provenance fields replaced by those in fields.
with_provenance(doc, fields) := json.patch(doc, [{
	"op": "replace",
	"path": "/partitions/0/manifest/provenance",
	"value": object.union(doc.partitions[0].manifest.provenance, fields),
}])

# METADATA
# description: doc with its first partition's fields replaced by those in fields.
with_partition(doc, fields) := json.patch(doc, [{
	"op": "replace",
	"path": "/partitions/0",
	"value": object.union(doc.partitions[0], fields),
}])

# METADATA
# description: doc with its first partition's manifest missing (null).
without_manifest(doc) := with_partition(doc, {"manifest": null})

# METADATA
# description: doc with its first partition's evidence replaced by evidence.
with_evidence(doc, evidence) := json.patch(doc, [{
	"op": "replace",
	"path": "/partitions/0/evidence",
	"value": evidence,
}])

# METADATA
# description: doc with its first partition's measured evidence content fields replaced by those in fields.
with_content(doc, fields) := json.patch(doc, [{
	"op": "replace",
	"path": "/partitions/0/evidence/content",
	"value": object.union(doc.partitions[0].evidence.content, fields),
}])

# METADATA
# description: doc without the fields at the JSON pointers in paths (each must exist).
without(doc, paths) := json.patch(doc, [{"op": "remove", "path": path} | some path in paths])

# METADATA
# description: >-
#   The violation example's rule reports against the partition at index 0, with the example's
#   expected violation's fields replaced by those in fields (such as the message).
violation(example, fields) := object.union(object.union(example.expected, {"partition": 0}), fields)
