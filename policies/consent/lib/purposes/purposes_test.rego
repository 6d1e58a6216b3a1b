package consent.lib.purposes_test

import data.consent.lib.purposes

test_lineage_runs_up_the_parent_links if {
	purposes.lineage("face_recognition_training") == {
		"face_recognition_training",
		"biometric_model_training",
		"commercial_model_training",
		"model_training",
	}
	purposes.lineage("analytics") == {"analytics"}
	purposes.lineage("no_such_purpose") == set()
}

test_consent_covers_descendants_only if {
	purposes.covers_request(["commercial_model_training"]) with input as _requesting("face_recognition_training")
	purposes.covers_request(["analytics", "face_recognition_training"]) with input as _requesting("face_recognition_training")
	not purposes.covers_request(["face_recognition_training"]) with input as _requesting("commercial_model_training")
	not purposes.covers_request(["commercial_model_training"]) with input as _requesting("research_model_training")
	not purposes.covers_request([]) with input as _requesting("model_training")
	not purposes.covers_request(["no_such_purpose"]) with input as _requesting("no_such_purpose")
}

test_request_level_values if {
	purposes.requested_known with input as _requesting("analytics")
	not purposes.requested_known with input as _requesting("no_such_purpose")
	purposes.requested_kinds == {"commercial"} with input as _requesting("analytics")
	purposes.requested_lineage == {"research_model_training", "model_training"} with input as _requesting("research_model_training")
}

test_kinds_come_from_the_taxonomy_flags if {
	purposes.kinds("face_recognition_training") == {"biometric", "commercial", "model_training"}
	purposes.kinds("research_model_training") == {"model_training"}
	purposes.kinds("analytics") == {"commercial"}
	purposes.kinds("no_such_purpose") == set()
}

test_known_purposes if {
	purposes.known("service_delivery")
	not purposes.known("emotion_recognition_training")
	"face_recognition_training" in purposes.ids
}

_requesting(purpose) := {"request": {"purpose": purpose}}
