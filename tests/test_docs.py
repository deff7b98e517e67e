"""The repository is self-contained: every doc that code, tests or the README
cite lives in docs/, and none cites the design notes it was built from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOURCES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("meshpki/**/*.py"),
                  *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py")])
OUTSIDE = re.compile(r"\b(DESIGN|ISTIO)\.md\b|\.\./shared")
DOC_LINK = re.compile(r"docs/([\w.-]+\.md)")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cites_only_docs_in_the_repository(path):
    text = path.read_text()
    if path.name != "test_docs.py":
        assert not OUTSIDE.search(text), f"{path.name} cites a document outside the repository"
    for name in DOC_LINK.findall(text):
        assert (ROOT / "docs" / name).is_file(), f"{path.name} cites docs/{name}, which does not exist"


def test_docs_link_to_each_other_by_existing_names():
    for doc in ROOT.glob("docs/*.md"):
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", doc.read_text()):
            assert (doc.parent / target).is_file(), f"{doc.name} links {target}, which does not exist"


def test_readme_names_every_runtime_dependency():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0] for spec in declared]
    readme = " ".join((ROOT / "README.md").read_text().split())
    sentence = readme.split("Runtime dependencies:", 1)[1].split(". ", 1)[0]
    missing = [name for name in names if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", sentence)]
    assert not missing, f"README's 'Runtime dependencies:' leaves out {missing}"
