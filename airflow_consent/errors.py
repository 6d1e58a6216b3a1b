"""Every error this package raises, as one tree a caller can branch on (no Airflow imports).

::

    ConsentError
    ├── ConsentConfigurationError   a bad argument or setting (also a ValueError); at parse time when possible
    ├── NoPartitionsFound           the data is not there (yet): a sensor keeps waiting, a gate fails
    ├── ConsentDenied               the policies decided against it; carries the GateReport
    ├── ClearanceRefused            the ledger does not clear a training task; carries every problem
    ├── EngineError                 no trustworthy decision could be had: the gate fails closed, a retry may help
    │   ├── EngineUnreachable
    │   ├── EngineTimeout
    │   ├── EngineHTTPError         .status
    │   ├── UndefinedDecision
    │   ├── MalformedDecision
    │   └── PolicyError             the policies failed to compile, or a builtin raised
    ├── OpaProvisioningError        no route yielded an opa binary (the local engine reports it as EngineUnreachable)
    ├── RevocationListUnreadable    .source: the partitions that need the list are denied (EVIDENCE-005)
    ├── PolicyLintError             OPA could not read a policy directory at all
    ├── PurgeFailed                 a purge's data files changed under it, or could not be rewritten
    └── LedgerError                 the ledger could not be read or appended to: fail closed, a retry may help
        └── LedgerTampered          hashes, links or signatures do not verify

In Airflow tasks two of them have an ``AirflowFailException`` twin, which fails the task without
retries: ``ConsentGateDenied`` (operators/consent.py) is a ``ConsentDenied``, and
``ClearanceDenied`` (clearance.py) carries a ``ClearanceRefused``'s problems.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_consent.clearance import ClearanceProblem
    from airflow_consent.models import GateReport


class ConsentError(Exception):
    """Base of every error this package raises."""


class ConsentConfigurationError(ConsentError, ValueError):
    """A gate, dataset or connection is configured wrongly; the message names the setting."""


class NoPartitionsFound(ConsentError):
    """The dataset root or its partitions are not there (yet): a sensor keeps waiting, a gate fails."""


class ConsentDenied(ConsentError):
    """The policies denied at least one partition (and the gate does not exclude it); ``report`` says why."""

    def __init__(self, message: str, report: GateReport):
        super().__init__(message)
        self.report = report


class ClearanceRefused(ConsentError):
    """The ledger does not clear the training task for this run; ``problems`` are every reason found."""

    def __init__(self, message: str, problems: list[ClearanceProblem]):
        super().__init__(message)
        self.problems = problems


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


class OpaProvisioningError(ConsentError):
    """No route yielded a usable OPA binary; the message lists what each route said."""


class RevocationListUnreadable(ConsentError):
    """A revocation list could not be read, or its ids cannot be compared with a dataset's subject ids."""

    def __init__(self, source: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class PolicyLintError(ConsentError):
    """OPA could not read a policy directory at all (a parse error, an unreadable METADATA block)."""


class PurgeFailed(ConsentError):
    """The data files changed under the purge, or could not be rewritten."""


class LedgerError(ConsentError):
    """The decision ledger could not be read or appended to: the gate fails closed, and a retry may help."""


class LedgerTampered(LedgerError):
    """The ledger does not verify: records were edited, deleted, reordered, inserted, or not signed by a gate."""
