package consent.rules.license_unknown_test

import data.consent.lib.examples
import data.consent.rules.license_unknown
import data.examples.license_unknown as example

test_bad_example_violates if {
	license_unknown.violation == {examples.violation(example, {})} with input as example.bad
}

test_good_example_passes if {
	license_unknown.violation == set() with input as example.good
}

test_case_spaces_and_underscores_do_not_matter if {
	every spelling in ["cc-by-4.0", "CC BY 4.0", "cc_by_4.0", " CC--BY 4.0 "] {
		license_unknown.violation == set() with input as _licensed([spelling])
	}
}

test_version_1_license_is_checked if {
	doc := examples.with_provenance(_licensed([]), {"license": "okcupid-terms-of-servic"})
	license_unknown.violation == {examples.violation(example, {"message": concat("", [
		"license \"okcupid-terms-of-servic\" of source \"studio_optin\" is not a known license; ",
		"did you mean \"okcupid-terms-of-service\"?",
	])})} with input as doc
}

test_unknown_terms_without_suggestion if {
	license_unknown.violation == {examples.violation(example, {
		"message": "license \"acme-data-terms-v7\" of source \"studio_optin\" is not a known license",
	})} with input as _licensed(["acme-data-terms-v7"])
}

test_several_suggestions if {
	license_unknown.violation == {examples.violation(example, {"message": concat("", [
		"license \"CC-BY-2.1\" of source \"studio_optin\" is not a known license; ",
		"did you mean \"CC-BY-2.0\" or \"CC-BY-2.5\"?",
	])})} with input as _licensed(["CC-BY-2.1"])
}

test_generating_model_and_upstream_licenses_are_checked if {
	doc := examples.with_provenance(_licensed(["CC-BY-4.0"]), {
		"generated_by": {"model": "gpt-4o", "terms": "open-ai-terms"},
		"upstream": [{"name": "wiki-faces", "licenses": ["CC-BY-SA-4.0", "GFDL"]}],
	})
	license_unknown.violation == {examples.violation(example, {"message": concat("; ", [
		"license \"GFDL\" of upstream dataset \"wiki-faces\" is not a known license; did you mean \"GFDL-1.1-only\", \"GFDL-1.2-only\" or \"GFDL-1.3-only\"?",
		"license \"open-ai-terms\" of generating model \"gpt-4o\" is not a known license; did you mean \"openai-terms\"?",
	])})} with input as doc
}

test_naming_no_license_is_no_permission if {
	doc := examples.with_provenance(_licensed([]), {
		"generated_by": {"model": "gpt-4o"},
		"upstream": [{"name": "wiki-faces", "licenses": []}],
	})
	license_unknown.violation == {examples.violation(example, {"message": concat("; ", [
		"generating model \"gpt-4o\" names no license",
		"source \"studio_optin\" names no license",
		"upstream dataset \"wiki-faces\" names no license",
	])})} with input as doc
}

test_an_id_two_entries_share_loosely_is_unknown if {
	license_unknown.violation == {examples.violation(example, {"message": concat("", [
		"license \"cc by 4.0\" of source \"studio_optin\" is not a known license; ",
		"did you mean \"CC-BY-4.0\" or \"cc-by-4.0\"?",
	])})} with input as _licensed(["cc by 4.0"])
		with data.consent.reference.license_terms.license_terms["cc-by-4.0"] as {"commercial": true, "purposes": null}
}

test_no_manifest_no_violation if {
	license_unknown.violation == set() with input as examples.without_manifest(example.bad)
}

# The good example with its own licenses replaced by ids, and no upstream datasets.
_licensed(ids) := examples.without(examples.with_provenance(example.good, {"licenses": ids}), ["/partitions/0/manifest/provenance/upstream"])
