#!/usr/bin/env python3
"""Every relative link of the repository's Markdown files resolves: the file exists and,
for `file#anchor` or `#anchor`, the anchor is a heading of that file (GitHub's slugs:
lower case, punctuation dropped, spaces to `-`, `-1`, `-2` for repeats). Links inside
code blocks and code spans are ignored. Exits 1 listing each broken link.

    python3 scripts/check-doc-links.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted(REPO / p for p in out.split() if (REPO / p).is_file())


def prose(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered; inline code spans blanked."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*(```+|~~~+)", line)
        if m:
            fence = None if fence and m.group(1).startswith(fence) else fence or m.group(1)
            continue
        if fence is None:
            lines.append((number, re.sub(r"`[^`]*`", "``", line) if blank_code else line))
    return lines


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose(path.read_text(encoding="utf-8"), blank_code=False):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def main() -> int:
    broken, checked = [], 0
    cache: dict[Path, set[str]] = {}
    for md in markdown_files():
        for number, line in prose(md.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                checked += 1
                file_part, _, anchor = target.partition("#")
                dest = (md.parent / file_part).resolve() if file_part else md
                where = f"{md.relative_to(REPO)}:{number}: {target}"
                if not dest.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and dest.suffix == ".md":
                    if anchor not in cache.setdefault(dest, anchors(dest)):
                        broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
    for b in broken:
        print(b)
    print(f"check-doc-links: {checked} links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
