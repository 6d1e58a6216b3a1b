"""Where the shipped Rego policies and their reference data live, and what they say."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

DEFAULT_ENTRYPOINT = "consent/main/decision"


def policy_dir() -> Path:
    """The shipped ``policies/`` directory (a source checkout, or inside the installed wheel)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "policies", package.parent / "policies"):
        if (candidate / "consent").is_dir():
            return candidate
    raise FileNotFoundError(f"no policies/ directory next to {package}")


@cache
def purpose_taxonomy(root: Path | None = None) -> dict[str, dict]:
    """Purpose id → its entry in the purposes reference data."""
    path = (root or policy_dir()) / "consent" / "reference" / "purposes" / "data.json"
    return json.loads(path.read_text())["purposes"]


def policy_revision(root: Path) -> str:
    """A digest of every policy and data file: changes whenever what OPA loads changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".rego", ".json"}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]
