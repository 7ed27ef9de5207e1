"""Every relative link in the repository's Markdown files reaches a file that exists, and every ``#anchor`` a heading.

The docs cite measurements by file and section (``docs/edge_export.md#...``, ``results/.../README.md``); a renamed
heading or a moved record would otherwise leave a dead link that nothing notices. Anchors follow GitHub's rule: the
heading's text, lower-cased, with everything but letters, digits, spaces, ``-`` and ``_`` dropped and spaces made
``-``; a repeated heading gets ``-1``, ``-2``, ...
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
        return [ROOT / line for line in listed.stdout.split()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        return sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts and "runs" not in p.parts)


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading's text (links and emphasis marks dropped first)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            slug = github_anchor(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def dead_links(path: Path) -> list[str]:
    found = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):  # code spans hold no links
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                found.append(f"{target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                found.append(f"{target}: no heading with that anchor")
    return found


@pytest.mark.parametrize("heading, anchor", [
    ("The CPU INT8 file's weights use 7 bits: x86 CPUs without VNNI",
     "the-cpu-int8-files-weights-use-7-bits-x86-cpus-without-vnni"),
    ("Your real data, pretrained weights, a GPU", "your-real-data-pretrained-weights-a-gpu"),
    ("`livestock search` on many machines", "livestock-search-on-many-machines"),
    ("YOLOv5n × 3 — seeds", "yolov5n--3--seeds"),
])
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_dead_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## Same\n## Same\n[ok](b.md#part) [ok](#same-1) [web](https://x.y/z)\n"
                                   "[gone](c.md) [bad](b.md#nowhere) `[code](d.md)`\n```\n[fenced](e.md)\n```\n",
                                   encoding="utf-8")
    (tmp_path / "b.md").write_text("## Part\n", encoding="utf-8")
    assert dead_links(tmp_path / "a.md") == ["c.md: no such file", "b.md#nowhere: no heading with that anchor"]


def test_every_markdown_link_in_the_repository_resolves():
    problems = [f"{path.relative_to(ROOT)}: {p}" for path in _markdown_files() for p in dead_links(path)]
    assert not problems, "\n".join(problems)
