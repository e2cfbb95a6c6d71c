"""The documentation stays short, connected and true to the code.

* README.md is read in five minutes: fewer than 1,500 words (``len(text.split())``);
* every relative link (and its #anchor) in README.md and docs/*.md points to something that exists;
* the README gives the demo and test commands exactly as scripts/ has them, with the demos' output folders, which
  .gitignore ignores;
* docs/CLI.md is what scripts/cli_reference.py generates from the argparse parsers.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_WORDS = 1500
#: the commands the README must give, exactly as scripts/ has them
COMMANDS = ("scripts/demo.sh", "scripts/demo_dose.sh", "scripts/test.sh")

LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]*>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> List[str]:
    seen: Dict[str, int] = {}
    anchors = []
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        slug = _slug(m.group(1))
        anchors.append(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> Iterator[Tuple[str, Path, str]]:
    """(link as written, target path, anchor) of every relative link of a Markdown file."""
    for m in LINK.finditer(_prose(path.read_text(encoding="utf-8"))):
        link = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        yield link, (path.parent / target).resolve() if target else path, anchor


def test_readme_is_short():
    words = len(README.read_text(encoding="utf-8").split())
    assert words < MAX_README_WORDS, f"README.md has {words} words; move details to docs/ (at most {MAX_README_WORDS - 1})"


@pytest.mark.parametrize("path", [README] + DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(path):
    problems = []
    for link, target, anchor in _links(path):
        if not target.exists():
            problems.append(f"{link}: {target} does not exist")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            problems.append(f"{link}: {target.name} has no heading with the anchor #{anchor}")
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_docs_pages_exist_and_are_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    for name in ("CLI.md", "METHODS.md", "VALIDATION.md", "ARCHITECTURE.md", "SLICER.md", "REFERENCES.md"):
        assert (ROOT / "docs" / name).is_file(), f"docs/{name} is missing"
        assert f"](docs/{name})" in text, f"README.md does not link docs/{name}"


@pytest.mark.parametrize("script", COMMANDS)
def test_readme_gives_the_commands_as_scripts_has_them(script):
    assert (ROOT / script).is_file(), f"{script} does not exist"
    text = README.read_text(encoding="utf-8")
    assert f"bash {script}" in text, f"README.md does not give the command `bash {script}`"
    out = re.search(r"^[^#\n]*--out\s+(\S+)", (ROOT / script).read_text(encoding="utf-8"), re.M)
    if out:  # a demo: its output folder is named in the README and ignored by git
        folder = out.group(1).strip("\"'")
        assert f"--out {folder}" in text, f"README.md does not name {script}'s output folder {folder}"
        ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
        assert f"{folder}/" in ignored or folder in ignored, f".gitignore does not ignore {folder}/"


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_parsers():
    page = ROOT / "docs" / "CLI.md"
    expected = _cli_reference().render()
    assert page.is_file() and page.read_text(encoding="utf-8") == expected, (
        "docs/CLI.md is out of date with the command-line parsers: run `python scripts/cli_reference.py`")


def test_cli_reference_names_every_command():
    module = _cli_reference()
    page = module.render()
    for tool, parser in module.build_parsers():
        for name, _, _ in module._subcommands(parser):
            assert f"### {tool} {name}\n" in page
