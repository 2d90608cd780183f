"""``omgate help [TOPIC]``: the manual (the README) wherever omgate is installed.

A wheel holds no README.md file, but its metadata holds the README as the package's long
description: ``omgate help`` reads it from there, or from the checkout it runs in. Its
headings are the topics; a topic prints its section, as written (Markdown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TextIO

from service.build import DISTRIBUTION
from service.exitcodes import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE

HEADING = re.compile(r"(#{2,4}) (.+)")
FENCE = "```"


@dataclass(frozen=True)
class Section:
    level: int  # 2 for "##"
    title: str
    text: str  # the heading line and everything up to the next heading of its level or above

    @property
    def plain_title(self) -> str:
        return self.title.replace("`", "")


def manual_text() -> str | None:
    """The README of the checkout omgate runs from, else the one its installed metadata
    holds; None when neither is there."""
    checkout = Path(__file__).resolve().parent.parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "README.md").is_file():
        return (checkout / "README.md").read_text(encoding="utf-8")
    try:
        document = metadata.distribution(DISTRIBUTION).read_text("METADATA")
    except metadata.PackageNotFoundError:
        return None
    if not document:
        return None
    _headers, _, body = document.partition("\n\n")  # the long description is the body
    return body or None


def sections(text: str) -> list[Section]:
    """Every ``##``, ``###`` and ``####`` section, headings in code blocks left out."""
    lines = text.splitlines()
    starts: list[tuple[int, int, str]] = []
    in_code = False
    for number, line in enumerate(lines):
        if line.startswith(FENCE):
            in_code = not in_code
        heading = None if in_code else HEADING.fullmatch(line)
        if heading:
            starts.append((number, len(heading.group(1)), heading.group(2).strip()))
    found = []
    for index, (start, level, title) in enumerate(starts):
        end = next((later for later, later_level, _ in starts[index + 1:] if later_level <= level),
                   len(lines))
        found.append(Section(level, title, "\n".join(lines[start:end]).rstrip() + "\n"))
    return found


def find(topic: str, every: list[Section]) -> Section | None:
    """The first section whose heading holds every word of ``topic`` as a word; else the
    first that holds them as parts of words."""
    words = topic.lower().split()
    if not words:
        return None
    for pattern in (r"\b{}\b", "{}"):
        for section in every:
            title = section.plain_title.lower()
            if all(re.search(pattern.format(re.escape(word)), title) for word in words):
                return section
    return None


def write_topics(every: list[Section], out: TextIO) -> None:
    out.write("omgate help TOPIC shows one of these sections of the manual (a word or two of "
              "its title will do, e.g. `omgate help probe`):\n\n")
    for section in every:
        out.write(f"{'  ' * (section.level - 2)}{section.plain_title}\n")


def run_help(topic: str | None, out: TextIO, err: TextIO) -> int:
    """EXIT_USAGE for a topic that is no section (the topics are then listed)."""
    text = manual_text()
    if text is None:
        err.write("omgate help: the manual is not installed with this omgate (it is the "
                  "README.md of omgate's source)\n")
        return EXIT_PROBLEMS
    every = sections(text)
    if topic is None:
        write_topics(every, out)
        return EXIT_OK
    section = find(topic, every)
    if section is None:
        err.write(f"omgate help: no section of the manual is about {topic!r}\n\n")
        write_topics(every, err)
        return EXIT_USAGE
    out.write(section.text)
    return EXIT_OK
