"""The error tree: every exception the package raises is declared in errors.py and drawn in its docstring."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import airflow_consent
from airflow_consent import errors

# Airflow twins of ConsentDenied and ClearanceRefused (they must be AirflowFailExceptions), and a
# private signal that never leaves manifests.py.
OUTSIDE = {
    "airflow_consent.operators.consent.ConsentGateDenied",
    "airflow_consent.clearance.ClearanceDenied",
    "airflow_consent.manifests._DuplicateKey",
}


def declared_exceptions() -> dict[str, type]:
    found = {}
    for module in pkgutil.walk_packages(airflow_consent.__path__, "airflow_consent."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found[f"{module.name}.{value.__qualname__}"] = value
    return found


def test_every_exception_is_declared_in_errors_py():
    outside = {name for name in declared_exceptions() if not name.startswith("airflow_consent.errors.")}
    assert outside == OUTSIDE


def test_the_docstring_draws_every_error_and_every_error_is_a_consent_error():
    tree = {
        name.rsplit(".", 1)[1]: cls
        for name, cls in declared_exceptions().items()
        if name.startswith("airflow_consent.errors.")
    }
    for name, cls in tree.items():
        assert re.search(rf"^ {{4}}(.*── )?{name}\b", errors.__doc__, re.MULTILINE), f"{name} is not in the tree"
        assert issubclass(cls, errors.ConsentError)
    assert not issubclass(errors.NoPartitionsFound, errors.ConsentConfigurationError)  # "not yet" is not "wrong"


def test_the_airflow_twins_carry_what_their_consent_errors_carry():
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_consent.clearance import ClearanceDenied, ClearanceProblem
    from airflow_consent.operators.consent import ConsentGateDenied

    report = object()
    denied = ConsentGateDenied("denied: …", report)  # type: ignore[arg-type]
    assert isinstance(denied, errors.ConsentDenied) and isinstance(denied, AirflowFailException)
    assert (str(denied), denied.report) == ("denied: …", report)
    problems = [ClearanceProblem(kind="no_gate", message="no gate")]
    refused = ClearanceDenied(errors.ClearanceRefused("refused: no gate", problems))
    assert isinstance(refused, AirflowFailException) and refused.problems == problems
