package consent.lib.licenses_test

import data.consent.lib.licenses

test_reference_merges_license_terms_over_spdx if {
	licenses.reference["CC-BY-4.0"].family == "cc-by"
	licenses.reference["research-only"].family == "research-only"
	licenses.reference.MIT.family == "unclassified" with data.consent.reference.license_terms.license_terms.MIT as {"family": "unclassified"}
}

test_claims_of_both_manifest_versions if {
	licenses.claims({"source": "s", "license": "MIT"}) == {{"license": "MIT", "of": "source \"s\""}}
	licenses.claims({
		"source": "s",
		"licenses": ["MIT", "CC0-1.0"],
		"generated_by": {"model": "m", "terms": "openai-terms"},
		"upstream": [{"name": "u", "licenses": ["ODbL-1.0"]}],
	}) == {
		{"license": "MIT", "of": "source \"s\""},
		{"license": "CC0-1.0", "of": "source \"s\""},
		{"license": "openai-terms", "of": "generating model \"m\""},
		{"license": "ODbL-1.0", "of": "upstream dataset \"u\""},
	}
	licenses.unlicensed({"source": "s", "license": "MIT"}) == set()
	licenses.unlicensed({"source": "s", "generated_by": {"model": "m"}}) == {"source \"s\"", "generating model \"m\""}
}

test_key_ignores_case_and_separator_runs if {
	licenses.key("CC-BY-4.0") == "cc-by-4.0"
	licenses.key("  CC BY__4.0 -") == "cc-by-4.0"
	licenses.key("") == ""
}

test_canonical if {
	licenses.canonical("Apache-2.0") == "Apache-2.0"
	licenses.canonical("apache 2.0") == "Apache-2.0"
	licenses.canonical("gpl_3.0_or_later") == "GPL-3.0-or-later"
	licenses.canonical("RESEARCH ONLY") == "research-only"
	not licenses.canonical("Apache 2")
	not licenses.canonical("")
}

test_suggestions_same_letters_by_id_or_title if {
	licenses.suggestions("Apache2.0") == ["Apache-2.0"]
	licenses.suggestions("Apache License 2.0") == ["Apache-2.0"]
	licenses.suggestions("MIT License") == ["MIT"]
	licenses.suggestions("GNU General Public License v3.0 only") == ["GPL-3.0-only", "GPL-3.0"]
}

test_suggestions_one_edit_away if {
	licenses.suggestions("CC-BY-4.O") == ["CC-BY-4.0"] # replaced
	licenses.suggestions("CC-BY-SAA-4.0") == ["CC-BY-SA-4.0"] # inserted
	licenses.suggestions("CC-BY-S-4.0") == ["CC-BY-SA-4.0"] # deleted
	licenses.suggestions("CC-YB-4.0") == ["CC-BY-4.0"] # swapped
	licenses.suggestions("ODbL-10") == ["ODbL-1.0"]
}

test_suggestions_by_prefix if {
	licenses.suggestions("CC-BY-NC-4") == ["CC-BY-NC-4.0"]
	licenses.suggestions("Apache-2.0-License") == ["Apache-2.0"]
	licenses.suggestions("BSD-3") == ["BSD-3-Clause", "BSD-3-Clause-HP", "BSD-3-Clause-Sun"]
}

test_no_suggestion if {
	licenses.suggestions("acme-data-terms-v7") == []
	licenses.suggestions("") == []
	licenses.suggestions("+") == []
}

test_known_ids_of_the_input if {
	doc := {"partitions": [
		{"manifest": {"provenance": {"source": "s", "license": "cc by 4.0"}}},
		{"manifest": {"provenance": {"source": "t", "licenses": ["MIT", "no-such-license"]}}},
		{"manifest": null},
	]}
	licenses.claimed_ids == {"cc by 4.0", "MIT", "no-such-license"} with input as doc
	licenses.known_ids == {"cc by 4.0": "CC-BY-4.0", "MIT": "MIT"} with input as doc
	licenses.unknown_ids == {"no-such-license"} with input as doc
}
