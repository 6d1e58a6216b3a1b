package consent.lib.dates_test

import data.consent.lib.dates

_request := {"request": {"evaluated_at": "2026-11-02T09:00:00Z"}}

test_reached_at_and_before_the_evaluation_time if {
	dates.reached("2026-11-02T09:00:00Z") with input as _request
	dates.reached("2026-11-02T08:59:59.999999999Z") with input as _request
	dates.reached("2026-11-02T04:00:00-05:00") with input as _request
}

test_not_reached_after_the_evaluation_time_or_unset if {
	not dates.reached("2026-11-02T09:00:00.000000001Z") with input as _request
	not dates.reached(null) with input as _request
}
