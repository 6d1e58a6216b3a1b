# METADATA
# title: OPA server authorization
# description: |
#   Loaded by `opa run --server --authentication=token --authorization=basic`: every API call must
#   carry `Authorization: Bearer <token>` with the token in the server's OPA_AUTH_TOKEN environment
#   variable, except the health check (GET /health), which carries no data. No token configured
#   (unset or empty): everything but the health check is denied.
package system.authz

default allow := false

allow if {
	input.method == "GET"
	input.path == ["health"]
}

allow if {
	_token != ""
	input.identity == _token
}

_token := object.get(opa.runtime().env, "OPA_AUTH_TOKEN", "")
