"""The README and docs/: every relative link reaches a file (and its heading, for #anchors), the README keeps CI's
test command, and CITATION.cff parses and names the report it implements."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                            if name.endswith(".md"))]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation other than - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # a '#' inside a code block is no heading
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read()
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue  # https: and the like
        path, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path else os.path.join(ROOT, doc)
        if not os.path.exists(target) or (anchor and anchor not in headings(target)):
            broken.append(link)
    assert not broken, f"{doc}: broken links {broken}"


def test_readme_has_ci_test_command_and_no_placeholders():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert "\npython -m pytest -q\n" in text  # .ci/run runs the README's test command
    assert "TODO" not in text


def test_citation_names_the_report():
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8") as f:
        citation = yaml.safe_load(f)
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    (report,) = citation["references"]
    assert report["title"].startswith("Multi-Task Offline Reinforcement Learning with Heuristic Conservative")
    assert [author["family-names"] for author in report["authors"]] == ["Bu", "Wang", "Xue"]
    assert report["year"] == 2024
