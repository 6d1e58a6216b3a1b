package consent.lib.result_test

import data.consent.lib.result

_chain := [
	{"path": ["consent", "rules", "example", "violation"]},
	{
		"path": ["consent", "rules", "example"],
		"annotations": {
			"scope": "package",
			"title": "Example",
			"custom": {
				"id": "TEST-001",
				"severity": "low",
				"regulation": ["GDPR Art. 5(1)(a)"],
				"remediation": "Fix it.",
				"recoverable": true,
			},
		},
	},
]

test_violation_is_built_from_package_metadata if {
	result.violation(_chain, 3, "what happened") == {
		"partition": 3,
		"rule_id": "TEST-001",
		"title": "Example",
		"severity": "low",
		"message": "what happened",
		"remediation": "Fix it.",
		"regulation": ["GDPR Art. 5(1)(a)"],
		"recoverable": true,
	}
}

test_missing_metadata_still_denies_at_the_strictest if {
	result.violation([{"path": ["consent", "rules", "bare", "violation"]}, {"path": ["consent", "rules", "bare"]}], 0, "m") == {
		"partition": 0,
		"rule_id": "consent.rules.bare",
		"title": "consent.rules.bare",
		"severity": "critical",
		"message": "m",
		"remediation": "",
		"regulation": [],
		"recoverable": false,
	}
}
