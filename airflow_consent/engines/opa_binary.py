"""Provision the pinned Open Policy Agent binary.

Order of preference:
1. ``$AIRFLOW_CONSENT_OPA_BINARY``, or an ``opa`` on ``PATH`` reporting the pinned version;
2. the binary cached by an earlier run of this module;
3. the official release download, verified against its published SHA-256;
4. a build from the Go module with the machine's Go toolchain (OPA's documented way to build
   a custom OPA: a two-file wrapper module that calls ``cmd.RootCommand``).

The result is cached outside the source tree (``$AIRFLOW_CONSENT_CACHE``, else
``$XDG_CACHE_HOME/airflow-consent``, else ``~/.cache/airflow-consent``).

Standard library only: this runs before the project's dependencies are installed.
Run it as ``python -m airflow_consent.engines.opa_binary`` to print the binary's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from airflow_consent.errors import OpaProvisioningError

OPA_VERSION = "1.22.3"
# Releases before 1.21.3 allowed a bundle signature-verification bypass (GHSA-g2pf-6v5v-qcc8).
MINIMUM_VERSION = (1, 21, 3)
RELEASE_URL = "https://github.com/open-policy-agent/opa/releases/download/v{version}/opa_{os}_{arch}_static"

_WRAPPER_MAIN = """package main

import (
\t"os"

\t"github.com/open-policy-agent/opa/cmd"
)

func main() {
\tif err := cmd.RootCommand.Execute(); err != nil {
\t\tos.Exit(1)
\t}
}
"""


def cache_dir() -> Path:
    """The directory where provisioned binaries are kept."""
    if explicit := os.environ.get("AIRFLOW_CONSENT_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "airflow-consent"


def cached_binary_path(version: str = OPA_VERSION) -> Path:
    return cache_dir() / "opa" / version / "opa"


def binary_version(path: Path | str) -> str | None:
    """The version an ``opa`` binary reports, or None when it cannot be run."""
    try:
        out = subprocess.run([str(path), "version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^Version:\s*v?(\S+)", out, re.MULTILINE)
    return match.group(1) if match else None


def is_safe_version(version: str) -> bool:
    """True when ``version`` is at least the minimum safe release."""
    numbers = re.findall(r"\d+", version)[:3]
    return len(numbers) == 3 and tuple(int(n) for n in numbers) >= MINIMUM_VERSION


def find_opa(version: str = OPA_VERSION) -> Path | None:
    """An already available binary at the pinned version, without downloading or building."""
    if explicit := os.environ.get("AIRFLOW_CONSENT_OPA_BINARY"):
        path = Path(explicit)
        found = binary_version(path)
        if found is None or not is_safe_version(found):
            raise OpaProvisioningError(
                f"AIRFLOW_CONSENT_OPA_BINARY={explicit} is not a runnable OPA >= "
                f"{'.'.join(map(str, MINIMUM_VERSION))} (it reports {found!r})"
            )
        return path
    on_path = shutil.which("opa")
    if on_path and binary_version(on_path) == version:
        return Path(on_path)
    cached = cached_binary_path(version)
    if cached.exists() and binary_version(cached) == version:
        return cached
    return None


def ensure_opa(version: str = OPA_VERSION, log: Callable[[str], None] = print) -> Path:
    """Return a runnable OPA binary at ``version``, downloading or building it if needed."""
    if found := find_opa(version):
        return found
    target = cached_binary_path(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per machine, even with parallel callers
        if target.exists() and binary_version(target) == version:
            return target
        failures = []
        for route in (_download_release, _build_from_go_module):
            try:
                route(version, target, log)
            except Exception as exc:
                failures.append(f"{route.__name__.strip('_').replace('_', ' ')}: {exc}")
                log(f"OPA {version}: {failures[-1]}")
                continue
            if binary_version(target) == version:
                return target
            failures.append(f"{route.__name__}: produced a binary that does not report version {version}")
    raise OpaProvisioningError(
        f"could not provision OPA {version}:\n  "
        + "\n  ".join(failures)
        + "\nInstall Go (https://go.dev/doc/install) or put opa v"
        + version
        + " on PATH."
    )


def _download_release(version: str, target: Path, log: Callable[[str], None]) -> None:
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    url = RELEASE_URL.format(version=version, os=system, arch=arch)
    log(f"OPA {version}: downloading {url}")
    with urllib.request.urlopen(url + ".sha256", timeout=20) as response:
        expected = response.read().decode().split()[0]
    with urllib.request.urlopen(url, timeout=120) as response:
        payload = response.read()
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise OpaProvisioningError(f"checksum mismatch for {url}: expected {expected}, got {actual}")
    _install_atomically(payload, target)


def _build_from_go_module(version: str, target: Path, log: Callable[[str], None]) -> None:
    go = shutil.which("go")
    if go is None:
        raise OpaProvisioningError("no Go toolchain on PATH")
    log(f"OPA {version}: building github.com/open-policy-agent/opa@v{version} with {go} (a few minutes when cold)")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    with tempfile.TemporaryDirectory(prefix="opa-build-") as work:
        Path(work, "go.mod").write_text(
            f"module airflowconsent/opabuild\n\ngo 1.22\n\nrequire github.com/open-policy-agent/opa v{version}\n"
        )
        Path(work, "main.go").write_text(_WRAPPER_MAIN)
        for command in (["mod", "tidy"], ["build", "-trimpath", "-o", "opa", "."]):
            done = subprocess.run([go, *command], cwd=work, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise OpaProvisioningError(f"go {' '.join(command)} failed:\n{done.stderr[-4000:]}")
        _install_atomically(Path(work, "opa").read_bytes(), target)


def _install_atomically(payload: bytes, target: Path) -> None:
    partial = target.with_suffix(".partial")
    partial.write_bytes(payload)
    partial.chmod(0o755)
    os.replace(partial, target)


if __name__ == "__main__":
    try:
        print(ensure_opa(log=lambda line: print(line, file=sys.stderr)))
    except OpaProvisioningError as exc:
        sys.exit(f"error: {exc}")
