"""What can go wrong, as a tree a caller can branch on.

- denied: the policies decided; retrying cannot help. Airflow tasks raise ``ConsentGateDenied``
  (an ``AirflowFailException`` carrying the gate report, in ``operators/consent.py``).
- ``EngineError``: something broke between the data and the decision (OPA unreachable, timeout,
  HTTP error, undefined or malformed answer, policy error); the gate blocks, and a retry may help.
- ``ConsentConfigurationError``: a bad argument or setting; raised at DAG parse time when possible.
"""

from __future__ import annotations


class ConsentError(Exception):
    """Base of every error this package raises."""


class ConsentConfigurationError(ConsentError, ValueError):
    """A gate, dataset or connection is configured wrongly; the message names the setting."""


class NoPartitionsFound(ConsentConfigurationError):
    """The dataset root or its partitions are not there (yet): a sensor keeps waiting, a gate fails."""


class EngineError(ConsentError):
    """The policy engine could not produce a trustworthy decision: the gate fails closed."""

    reason = "engine error"

    def __init__(self, message: str, *, engine: str):
        super().__init__(f"{self.reason} ({engine}): {message}")
        self.engine = engine


class EngineUnreachable(EngineError):
    reason = "policy engine unreachable"


class EngineTimeout(EngineError):
    reason = "policy engine timed out"


class EngineHTTPError(EngineError):
    reason = "policy engine returned an HTTP error"

    def __init__(self, message: str, *, engine: str, status: int):
        super().__init__(message, engine=engine)
        self.status = status


class UndefinedDecision(EngineError):
    reason = "policy decision undefined"


class MalformedDecision(EngineError):
    reason = "policy decision malformed"


class PolicyError(EngineError):
    """The policies failed to compile or a builtin raised (strict-builtin-errors)."""

    reason = "policy evaluation error"


class LedgerError(ConsentError):
    """The decision ledger could not be read or appended to: the gate fails closed, and a retry may help."""


class LedgerTampered(LedgerError):
    """The ledger's hash chain does not verify: records were edited, deleted, reordered or inserted."""
