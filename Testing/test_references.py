"""Citations in the code and the documentation: every paper is cited by its short name, and every short name resolves
to an entry of docs/REFERENCES.md (a ``### <short name>`` heading).

* ``Ren <year> <venue>`` (``Ren 2021 Front Oncol``, ``Ren 2022 Front Oncol``, ``Ren 2021 IJROBP``) and ``Li <year>``
  must be headings of REFERENCES.md exactly; a bare ``Ren <year>`` without its venue is ambiguous (two 2021 papers).
* Author-year citations (``Lanconelli et al. 2012``, ``Hudson & Larkin 1994``, ``Sternheimer and Peierls 1971``,
  ``Kahn 1954``, ...) need a heading that names the first author and the year.
* No paper is cited by the bare three-digit number it once had (a bare zero-zero-N in parentheses, before "'s", after
  "as in"): parts of numbers (a decimal, an exponent, digit groups), of words and of file names are not citations.

Files: the *.py, *.md and *.ui files of the repository (git's tracked and untracked, not ignored; .venv never). This
file's own examples of wrong citations are left out of the resolution check.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "docs" / "REFERENCES.md"
SUFFIXES = (".py", ".md", ".ui")
#: folders never scanned when git is not available (build outputs, environments, caches)
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", "demo_output",
             "dosecnn_demo", "node_modules"}

#: a paper's old name: a bare zero-zero-digit (0 to 4), not part of a number (a decimal, an exponent, digit groups
#: such as "30 000" or "1,000"), of a word (a case folder name) or of a file name; the examples are at the end
OLD_STYLE = re.compile(r"(?<![\w.#+\-/\\])(?<!\d[ ,\u00a0\u202f])00[0-4](?!\w|[.,]\d|\.[A-Za-z])")

_NAME = r"[A-Z][\w'\u2019-]*"
#: author-year citations: "X et al. 2012", "X and Y 1971", "X & Y (1994)", "X, Y and Z (2002)"
MULTI_AUTHOR = re.compile(rf"\b({_NAME})(?: et al\.?,?| (?:and|&) (?:de |van |von )?{_NAME},?) \(?((?:19|20)\d\d)\)?")
#: single-author citations the code uses ("Kahn 1954", "Lanconelli 2012", "Sternheimer-Peierls (1971)")
SINGLE_AUTHOR = re.compile(r"\b(Kahn|Lanconelli|Attix|Murray|Schneider|Hudson|Koblinger|Woodcock|Sternheimer-Peierls"
                           r"|Li),? \(?((?:19|20)\d\d)\)?")
REN = re.compile(r"\bRen (20\d\d)\b( (?:Front Oncol|IJROBP)\b)?")


def _repository_files() -> List[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, text=True, check=True, timeout=60).stdout
        paths = [ROOT / p for p in listed.split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if not (set(p.relative_to(ROOT).parts[:-1]) & SKIP_DIRS)]
    return sorted(p for p in paths if p.suffix in SUFFIXES and p.is_file() and ".venv" not in p.relative_to(ROOT).parts)


FILES = _repository_files()


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _joined(text: str) -> str:
    """The text with line breaks (and the comment marks and string quotes around them) turned into single spaces, so
    that a citation broken over two lines is read whole."""
    return re.sub(r"[\"']?[ \t]*\r?\n\s*(?:#+ ?|//\s*)?[rfbu]*[\"']?[ \t]*", " ", text)


def _headings() -> List[str]:
    return [m.group(1).strip() for m in re.finditer(r"^###\s+(.+?)\s*$", REFERENCES.read_text(encoding="utf-8"), re.M)]


def _citations(text: str) -> Iterator[Tuple[str, str, str]]:
    """(kind, cited text, key) of every citation: kind "exact" (key must be a heading) or "author" (key = first
    author's surname; the year is in the cited text)."""
    text = _joined(text)
    for m in REN.finditer(text):
        yield "exact", m.group(0), (m.group(0) if m.group(2) else "")
    text = REN.sub(" ", text)  # "Ren 2021 IJROBP and Ren 2022 Front Oncol" is not an author-year pair
    for m in SINGLE_AUTHOR.finditer(text):
        if m.group(1) == "Li":
            yield "exact", m.group(0), f"Li {m.group(2)}"
        else:
            yield "author", m.group(0), m.group(1)
    for m in MULTI_AUTHOR.finditer(text):
        yield "author", m.group(0), m.group(1)


def _resolves(kind: str, cited: str, key: str, headings: List[str]) -> bool:
    if kind == "exact":
        return bool(key) and key in headings
    year = re.search(r"(?:19|20)\d\d", cited).group(0)
    surname = _ascii(key).split("-")[0]
    return any(year in h and re.search(rf"\b{re.escape(surname)}\b", _ascii(h)) for h in headings)


def test_references_file_has_the_main_papers_once():
    headings = _headings()
    assert len(headings) == len(set(headings)), "docs/REFERENCES.md: a short name has two entries"
    for name in ("Ren 2021 Front Oncol", "Ren 2022 Front Oncol", "Ren 2021 IJROBP", "Li 2020"):
        assert name in headings, f"docs/REFERENCES.md has no entry '### {name}'"


def test_every_cited_short_name_resolves_to_a_reference():
    headings = _headings()
    problems: Set[str] = set()
    for path in (p for p in FILES if p != Path(__file__).resolve()):
        for kind, cited, key in _citations(path.read_text(encoding="utf-8", errors="replace")):
            if not _resolves(kind, cited, key, headings):
                hint = "name its venue (Front Oncol or IJROBP)" if kind == "exact" and not key else "add an entry"
                problems.add(f"{path.relative_to(ROOT)}: '{cited}' is not in docs/REFERENCES.md ({hint})")
    assert not problems, "\n".join(sorted(problems))


def test_no_paper_is_cited_by_its_old_number():
    problems = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_STYLE.search(line):
                problems.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not problems, ("papers are cited by their short names (docs/REFERENCES.md), not by numbers:\n"
                          + "\n".join(problems))


# The checks themselves: what they must catch and what they must leave alone. (The examples are assembled from
# pieces so that this file does not cite anything by number itself.)
N0, N3, N4 = "00" + "0", "00" + "3", "00" + "4"


@pytest.mark.parametrize("text", [f"as in {N4}", f"({N4})", f"{N4}'s network", f"{N3} equation 2", f"({N0}, {N3})",
                                  f"{N4}: 200 epochs", f"trained as {N4}.", f"{N0}-{N3}", f"{N4}\u2019s gains",
                                  f"the ablation study of {N0} on a cohort"])
def test_old_style_citations_are_caught(text):
    assert OLD_STYLE.search(text), text


@pytest.mark.parametrize("text", ["0.004 g/cm3", "case000", "case_004", "1e-004", "30 000 decays", "1 000 000",
                                  "10,000,000", "test004", "004.nrrd", "0047", "v1.004", "#000000", "x004",
                                  "-004", "2004", "ICRP 38(3)", "/004/"])
def test_numbers_are_not_taken_for_citations(text):
    assert not OLD_STYLE.search(text), text


@pytest.mark.parametrize("text,ok", [
    ("Ren 2021 IJROBP", True), ("Ren 2022 Front\n    # Oncol", True), ("Ren 2021", False),
    ("Ren 2023 Front Oncol", False), ("Li 2020's network", True), ("Li 2021", False),
    ("Lanconelli et al. 2012", True), ("Hudson & Larkin 1994", True), ("Sternheimer-Peierls (1971)", True),
    ("Case, de Hoffmann & Placzek 1953", True), ("Smith et al. 2019", False), ("Kahn 1954", True),
    ("Kahn 1955", False),
])
def test_citation_resolution(text, ok):
    headings = _headings()
    found = list(_citations(text))
    assert found, text
    assert all(_resolves(kind, cited, key, headings) for kind, cited, key in found) == ok, found
