# METADATA
# title: Dates
# description: >-
#   Time comparisons against the request's evaluation time. Timestamps are RFC 3339 strings;
#   a malformed one is a builtin error, which strict-builtin-errors turns into a failed query.
package consent.lib.dates

# METADATA
# description: The request's evaluated_at in nanoseconds since the epoch.
evaluated_at_ns := time.parse_rfc3339_ns(input.request.evaluated_at)

# METADATA
# description: True when timestamp is set (not null) and at or before the evaluation time.
reached(timestamp) if {
	timestamp != null
	time.parse_rfc3339_ns(timestamp) <= evaluated_at_ns
}
