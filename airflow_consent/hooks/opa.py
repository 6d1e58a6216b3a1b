"""OpaHook: a production OPA server behind an Airflow connection of type ``opa``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_consent.engines import EngineAnswer, describe_opa_errors
from airflow_consent.errors import (
    ConsentConfigurationError,
    EngineHTTPError,
    EngineTimeout,
    EngineUnreachable,
    MalformedDecision,
    PolicyError,
    UndefinedDecision,
)

if TYPE_CHECKING:
    from opa_client.opa import OpaClient

# A builtin error is an error, not a silently undefined (fail-open) rule; provenance names the
# OPA version and bundle revisions that decided.
QUERY_PARAMS = {"strict-builtin-errors": "true", "provenance": "true"}


class _Bundle(BaseModel):
    """One bundle in the provenance."""

    model_config = ConfigDict(strict=True)

    revision: str | None = None


class _Provenance(BaseModel):
    """What the report keeps of the ``provenance`` OPA adds to an answer; other types are refused."""

    model_config = ConfigDict(strict=True)

    version: str | None = None
    bundles: dict[str, _Bundle] = {}


class OpaHook(BaseHook):
    """Queries an OPA server over REST with ``opa-python-client``.

    Connection fields: host (name or URL), port (default 8181), schema (``http`` or ``https``),
    password (bearer token). Extra: ``timeout`` (seconds, default 30), ``retries`` (transient
    failures retried inside one evaluation, default 2), ``ca_bundle`` (path to a CA file for TLS),
    ``client_cert`` / ``client_key`` (paths, for mutual TLS).
    """

    conn_name_attr = "opa_conn_id"
    default_conn_name = "opa_default"
    conn_type = "opa"
    hook_name = "Open Policy Agent"

    def __init__(self, opa_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opa_conn_id = opa_conn_id
        self._client: OpaClient | None = None
        self._settings: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"OPA server (connection {self.opa_conn_id!r})"

    def get_conn(self) -> OpaClient:
        """An ``OpaClient`` configured from the connection (created once per hook)."""
        if self._client is None:
            from opa_client.opa import OpaClient

            settings = self._client_settings(self.get_connection(self.opa_conn_id))
            ca_bundle = settings.pop("ca_bundle")
            self._settings = {"timeout": settings["timeout"], "retries": settings.pop("retries")}
            client = OpaClient(**settings, retries=0)  # retried here, with tenacity, on transient errors
            if ca_bundle:
                # OpaClient has no CA-bundle parameter; its requests session takes one.
                client._session.verify = ca_bundle
            self._client = client
        return self._client

    def _client_settings(self, conn) -> dict[str, Any]:
        extra = conn.extra_dejson
        host, port, ssl = _address(conn.host, conn.port, conn.schema)
        try:
            timeout, retries = float(extra.get("timeout", 30)), int(extra.get("retries", 2))
        except (TypeError, ValueError) as exc:
            raise ConsentConfigurationError(f"connection {self.opa_conn_id!r}: bad timeout/retries: {exc}") from exc
        cert = (extra["client_cert"], extra["client_key"]) if extra.get("client_cert") else None
        return {
            "host": host,
            "port": port,
            "ssl": ssl,
            "cert": cert,
            "token": conn.password or None,
            "timeout": timeout,
            "retries": retries,
            "ca_bundle": extra.get("ca_bundle") if ssl else None,
        }

    def evaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer:
        """One batched query of ``entrypoint`` (e.g. ``consent/main/decision``) over the whole input."""
        import tenacity

        client = self.get_conn()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            stop=tenacity.stop_after_attempt(self._settings["retries"] + 1),
            wait=tenacity.wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        )
        return self._answer(retrying(self._query, client, policy_input, entrypoint), entrypoint)

    async def aevaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer:
        """``evaluate`` for the triggerer: ``AsyncOpaClient``, connection read without blocking.

        The async client verifies TLS against the system CA store (``SSL_CERT_FILE`` applies); the
        connection's ``ca_bundle`` is not supported here.
        """
        import aiohttp
        from opa_client.opa_async import AsyncOpaClient

        settings = self._client_settings(await self.aget_connection(self.opa_conn_id))
        settings.pop("ca_bundle")
        async with AsyncOpaClient(**settings) as client:  # retries connection errors and 502/503/504
            try:
                answer = await client.query_rule(policy_input, entrypoint.strip("/"), query_params=QUERY_PARAMS)
            except TimeoutError as exc:
                raise EngineTimeout(
                    f"no answer within {client.timeout:g} s from {client.root_url}", engine=self.name
                ) from exc
            except aiohttp.ClientResponseError as exc:
                raise EngineHTTPError(
                    f"HTTP {exc.status} from {exc.request_info.url}: {exc.message}", engine=self.name, status=exc.status
                ) from exc
            except aiohttp.ClientConnectionError as exc:
                raise EngineUnreachable(f"cannot connect to {client.root_url}: {exc}", engine=self.name) from exc
            except (aiohttp.ContentTypeError, ValueError) as exc:
                raise MalformedDecision(
                    f"the answer from {client.root_url} is not JSON: {exc}", engine=self.name
                ) from exc
        return self._answer(answer, entrypoint)

    def _answer(self, answer: Any, entrypoint: str) -> EngineAnswer:
        if not isinstance(answer, dict):
            raise MalformedDecision(f"expected a JSON object, got {type(answer).__name__}", engine=self.name)
        if "result" not in answer:
            raise UndefinedDecision(
                f"data/{entrypoint} is undefined on the server: is the entrypoint right and are the policies loaded?",
                engine=self.name,
            )
        try:
            provenance = _Provenance.model_validate(answer.get("provenance", {}))
        except ValidationError as exc:
            raise MalformedDecision(f"the answer's provenance is not OPA's: {exc}", engine=self.name) from exc
        bundles = sorted(provenance.bundles.items())
        revision = ",".join(f"{name}@{bundle.revision}" for name, bundle in bundles if bundle.revision) or None
        return EngineAnswer(result=answer["result"], opa_version=provenance.version, policy_revision=revision)

    def _query(self, client: OpaClient, policy_input: dict, entrypoint: str) -> Any:
        import requests

        try:
            return client.query_rule(policy_input, entrypoint.strip("/"), query_params=QUERY_PARAMS)
        except requests.Timeout as exc:
            raise EngineTimeout(
                f"no answer within {client.timeout:g} s from {client.root_url}", engine=self.name
            ) from exc
        except requests.ConnectionError as exc:
            raise EngineUnreachable(f"cannot connect to {client.root_url}: {exc}", engine=self.name) from exc
        except requests.HTTPError as exc:
            response = exc.response
            if response is None:
                raise EngineHTTPError(
                    f"HTTP error without a response from {client.root_url}: {exc}", engine=self.name, status=0
                ) from exc
            errors = _json_or_none(response).get("errors")
            if errors:  # compile errors, builtin errors under strict-builtin-errors: not transient
                raise PolicyError(describe_opa_errors(errors), engine=self.name) from exc
            raise EngineHTTPError(
                f"HTTP {response.status_code} from {response.url}: {response.text[:1000]}",
                engine=self.name,
                status=response.status_code,
            ) from exc
        except ValueError as exc:  # the body was not JSON
            raise MalformedDecision(f"the answer from {client.root_url} is not JSON: {exc}", engine=self.name) from exc

    def upload_policy(self, policy_id: str, rego: str) -> None:
        """PUT one Rego module as-is: a module OPA rejects is an error, never silently rewritten."""
        from opa_client.errors import RegoParseError

        try:
            self.get_conn().update_policy_from_string(rego, policy_id, rego_compat=False)
        except RegoParseError as exc:
            raise PolicyError(f"OPA rejected policy {policy_id!r}: {exc}", engine=self.name) from exc

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's Test button: is the server healthy?"""
        try:
            healthy = self.get_conn().check_health()
        except Exception as exc:
            return False, str(exc)
        return (True, "OPA is healthy") if healthy else (False, "OPA /health did not answer 200")


def _json_or_none(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, EngineHTTPError):
        return exc.status >= 500
    return isinstance(exc, (EngineUnreachable, EngineTimeout))


def _address(host: str | None, port: int | None, schema: str | None) -> tuple[str, int, bool]:
    if not host:
        raise ConsentConfigurationError("the OPA connection has no host")
    scheme = (schema or "http").lower()
    if "://" in host:
        parts = urlsplit(host)
        host, scheme, port = parts.hostname or "", parts.scheme, port or parts.port
    if scheme not in {"http", "https"}:
        raise ConsentConfigurationError(f"the OPA connection's schema must be http or https, not {scheme!r}")
    return host, int(port or 8181), scheme == "https"
