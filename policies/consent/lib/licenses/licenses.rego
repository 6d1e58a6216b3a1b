# METADATA
# title: Licenses
# description: >-
#   The licenses reference data (the SPDX License List classified for data use, overridden and
#   extended by the organisation's license_terms), the license claims of a manifest, and how a
#   claimed id names a known license: exactly, or ignoring case and runs of spaces, underscores
#   and hyphens ("CC BY 4.0" is CC-BY-4.0), with "did you mean" suggestions for near misses.
package consent.lib.licenses

import data.consent.lib.partitions
import data.consent.reference.license_terms.license_terms
import data.consent.reference.licenses.licenses as spdx

# METADATA
# description: >-
#   License id → its entry (title, family, commercial, purposes, ...): the SPDX licenses, with the
#   entries of license_terms added and, for the same id, winning.
reference := object.union(spdx, license_terms)

# METADATA
# description: >-
#   The license claims of a manifest's provenance, as {"license", "of"} objects, "of" saying whose
#   license it is: the data's own (license in version 1, licenses in version 2), the generating
#   model's terms (generated_by.terms) and every upstream dataset's licenses.
claims(provenance) := {{"license": id, "of": of} |
	some [of, ids] in _parts(provenance)
	some id in ids
}

# METADATA
# description: >-
#   Whose license the provenance does not name ("source \"x\"", "generating model \"m\"", "upstream
#   dataset \"u\""): naming no license is no permission.
unlicensed(provenance) := {of | some [of, ids] in _parts(provenance); count(ids) == 0}

# [whose, the license ids named for it]: one for the data, its generating model, each upstream dataset.
_parts(provenance) := ({_own(provenance)} | _generated(provenance)) | _upstream(provenance)

_own(provenance) := [sprintf("source %q", [object.get(provenance, "source", "")]), ids] if {
	named := {id | id := object.get(provenance, "license", null); is_string(id)}
	ids := named | {id | some id in object.get(provenance, "licenses", [])}
}

_generated(provenance) := {[sprintf("generating model %q", [object.get(generator, "model", "")]), terms]} if {
	generator := object.get(provenance, "generated_by", null)
	is_object(generator)
	terms := {id | id := object.get(generator, "terms", null); is_string(id)}
} else := set()

_upstream(provenance) := {[sprintf("upstream dataset %q", [object.get(dataset, "name", "")]), ids] |
	some dataset in object.get(provenance, "upstream", [])
	ids := {id | some id in object.get(dataset, "licenses", [])}
}

# METADATA
# description: Every license id the partitions of the input claim (computed once per query).
claimed_ids := {claim.license |
	some manifest in partitions.manifests
	some claim in claims(manifest.provenance)
}

# METADATA
# description: >-
#   Every license id claimed in the input → the known id it names (ids naming none are left out).
#   Computed once per query, over the distinct ids: rules look claims up here.
known_ids := {claimed: id |
	some claimed in claimed_ids
	id := canonical(claimed)
}

# METADATA
# description: The license ids claimed in the input that name no known license.
unknown_ids := {claimed | some claimed in claimed_ids; not known_ids[claimed]}

# METADATA
# description: >-
#   The known license id claimed names: itself when known, else the single id equal to it by key;
#   undefined when there is none, or more than one.
canonical(claimed) := claimed if {
	reference[claimed]
} else := id if {
	[id] := [id | some id, _ in reference; key(id) == key(claimed)]
}

# METADATA
# description: >-
#   An id compared loosely: in lower case, each run of spaces, underscores and hyphens one hyphen,
#   none at either end.
key(id) := trim(regex.replace(lower(id), `[\s_-]+`, "-"), "-")

# METADATA
# description: >-
#   Up to three known ids claimed may have meant, best first: ids or titles equal to it but for
#   case and punctuation ("Apache License 2.0", "apache2.0"), else ids one edit away
#   ("CC-BY-4.O"), else ids it begins or that begin it ("CC-BY-NC-4", "MIT-License"); empty when
#   none is near.
suggestions(claimed) := found if {
	found := _best(_same_letters(claimed))
	count(found) > 0
} else := found if {
	found := _best(_one_edit_away(claimed))
	count(found) > 0
} else := _best(_prefixed(claimed))

# Non-deprecated ids first, then shorter ones, then in order.
_best(ids) := [id |
	some entry in array.slice(sort([[object.get(reference[id], "deprecated", false), count(id), id] | some id in ids]), 0, 3)
	id := entry[2]
]

_squash(text) := regex.replace(lower(text), `[^a-z0-9+]`, "")

_same_letters(claimed) := {id |
	letters := _squash(claimed)
	letters != ""
	some id, license in reference
	letters in {_squash(id), _squash(object.get(license, "title", ""))}
}

_one_edit_away(claimed) := {id |
	wanted := key(claimed)
	some id, _ in reference
	_within_one_edit(wanted, key(id))
}

_prefixed(claimed) := {id |
	wanted := key(claimed)
	wanted != ""
	some id, _ in reference
	_begins(key(id), wanted)
} | {id |
	wanted := key(claimed)
	some id, _ in reference
	_begins(wanted, key(id))
}

# long is short followed by a separator and more.
_begins(long, short) if {
	startswith(long, short)
	substring(long, count(short), 1) in {"-", ".", "+"}
}

_within_one_edit(a, b) if {
	count(a) == count(b)
	count(a) > 0
	differ := [i | some i in numbers.range(0, count(a) - 1); substring(a, i, 1) != substring(b, i, 1)]
	_replaced_or_swapped(a, b, differ)
}

_within_one_edit(a, b) if _one_inserted(a, b)

_within_one_edit(a, b) if _one_inserted(b, a)

_replaced_or_swapped(_, _, differ) if count(differ) == 1

_replaced_or_swapped(a, b, [i, j]) if {
	j == i + 1
	substring(a, i, 1) == substring(b, j, 1)
	substring(a, j, 1) == substring(b, i, 1)
}

# longer is shorter with one character inserted.
_one_inserted(shorter, longer) if {
	count(longer) == count(shorter) + 1
	some i in numbers.range(0, count(shorter))
	concat("", [substring(longer, 0, i), substring(longer, i + 1, -1)]) == shorter
}
