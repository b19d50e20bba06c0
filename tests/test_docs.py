"""The README and docs/: every relative link reaches a file (and its heading, for #anchors), the README keeps CI's
test command, CITATION.cff parses and names the report it implements, and the README's cpu-wide figures and
side-by-side table are its tables' figures."""

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


def _decimal_figures(text: str) -> list[str]:
    """Returns and probabilities as printed (318.5, 0.50, 15.4) and signed percentages (+20%)."""
    return re.findall(r"[+-]\d+%|\d[\d,]*\.\d+", text)


def test_readmes_cpu_wide_figures_are_in_its_tables_and_its_run_count_is_the_runs_on_disk():
    """The README's cpu-wide section is written by hand as runs land: each of its figures must be one that
    `report.py` printed (or the grid's README states), rounded as the README rounds it, so a figure the next
    run's table changed fails here until the prose follows."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    start = readme.index("**At the report's width")
    section = readme[start:readme.index("\n## ", start)]
    sources, source_paths = "", ["results/cpu-wide/table1.md", "results/cpu/table1.md", "results/cpu-wide/README.md"]
    for path in source_paths:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            sources += f.read()
    printed = _decimal_figures(sources)
    printed_values = [float(figure.replace(",", "")) for figure in printed if not figure.endswith("%")]
    figures = _decimal_figures(section)
    assert len(figures) > 10, "the README's cpu-wide section lost its figures"
    stale = []
    for figure in figures:
        if figure.endswith("%"):
            found = figure in printed
        else:
            decimals = len(figure.partition(".")[2])
            found = any(round(value, decimals) == float(figure.replace(",", "")) for value in printed_values)
        if not found:
            stale.append(figure)
    assert not stale, f"README.md: cpu-wide figures in none of {source_paths} (stale?): {stale}"
    runs_on_disk = len([name for name in os.listdir(os.path.join(ROOT, "results", "cpu-wide", "runs"))
                        if name.endswith(".json")])
    progress = re.search(r"in progress: (\d+) of 18 runs", section)
    claimed = int(progress.group(1)) if progress else 18
    assert claimed == runs_on_disk, \
        f"README.md: cpu-wide says {claimed} of 18 runs, results/cpu-wide/runs has {runs_on_disk}"


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in text, header and separator rows included."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def test_readmes_side_by_side_table_is_the_cpu_wide_reports_beside_table():
    """Each cell of the README's side-by-side table (walk / run) is the cell of table1.md's "Beside the `cpu`
    scale" table for its reading, task, algorithm and scale, so a row or column put in the wrong place fails."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, "results", "cpu-wide", "table1.md"), encoding="utf-8") as f:
        report = f.read()
    beside = report[report.index("## Beside the `cpu` scale"):]
    beside = beside[:beside.index("\n## ")]
    algorithms = ["BC", "CSAC", "MTCSAC", "HCSAC"]
    cells = {}  # (reading, task, algorithm) -> [cpu-wide cell, cpu cell] or [the report's cell]
    for row in _table_rows(beside):
        if len(row) == 7 and row[3:] != algorithms and not row[0].startswith("---"):
            for algorithm, cell in zip(algorithms, row[3:]):
                cells[row[0], row[2], algorithm] = cell.split(" / ")
    readme_rows = [row for row in _table_rows(readme) if row[0].startswith(("the report's Table 1", "`cpu"))
                   and len(row) == 5]
    assert len(readme_rows) >= 5, "README.md lost its side-by-side table"
    for row in readme_rows:
        label = row[0]
        reading = next(name for name in ("the report's Table 1", "best checkpoint", "plateau") if name in label)
        side = 0 if reading == "the report's Table 1" or label.startswith("`cpu-wide`") else 1
        for algorithm, cell in zip(algorithms, row[1:]):
            walk, run = cell.split(" / ")
            seeds = re.search(r" \(\d\)$", run)
            if seeds:  # the README writes a cell's seed count once, after run; table1.md after each task
                walk += seeds.group(0)
            expected = (cells[reading, "walk", algorithm][side], cells[reading, "run", algorithm][side])
            assert (walk, run) == expected, \
                f"README.md: side-by-side {label!r}, {algorithm}: {cell!r}, table1.md {expected}"
