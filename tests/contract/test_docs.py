"""docs/API.md and the README: in the repository, and the error catalogue complete."""

from __future__ import annotations

import re

from tests.contract.conftest import ROOT

_REASON = re.compile(r"""reason\s*=\s*"([A-Z_]+)\"""")
_LINK = re.compile(r"\]\(([^)]+)\)")


def test_error_catalogue_lists_every_reason_the_services_give() -> None:
    reasons = {
        match
        for path in (ROOT / "services").rglob("*.py")
        for match in _REASON.findall(path.read_text())
    }
    catalogue = (ROOT / "docs" / "API.md").read_text()
    assert len(reasons) > 10
    assert {r for r in reasons if f"| `{r}` |" not in catalogue} == set()


def test_readme_and_docs_link_only_inside_the_repository() -> None:
    for name in ("README.md", "docs/API.md", "docs/versioning.md"):
        page = ROOT / name
        for target in _LINK.findall(page.read_text()):
            if target.startswith("http"):
                continue
            resolved = (page.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{name} links outside: {target}"
            assert resolved.exists(), f"{name} links to a missing file: {target}"
