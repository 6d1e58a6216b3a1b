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
