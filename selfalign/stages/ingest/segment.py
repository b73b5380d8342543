"""Cutting a document into self-contained segments, as the paper did with ClueWeb pages.

A segment is the text under one header (HTML ``<h1>``-``<h6>``, a Markdown ``#`` heading or a
Markdown/reStructuredText underlined title), and keeps that header as its first line. HTML is
parsed with selectolax (the Lexbor HTML5 parser); page furniture (scripts, styles, navigation,
headers/footers, asides, forms, and elements whose role/class/id says navigation or footer)
is removed before the walk. Text before the first header forms a segment with an empty header,
which the header filter then counts and drops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selfalign.stages.ingest.config import SegmentSettings

HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Elements after which text continues on a new line.
BLOCK_TAGS = {
    "address", "article", "blockquote", "body", "br", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "hr", "html", "li", "main", "ol",
    "p", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_TOKEN_SPLIT = re.compile(r"[\s\-_]+")


@dataclass(frozen=True)
class Section:
    header: str | None  # None: the format has no headers (plain text); "": before the first header
    body: str

    @property
    def text(self) -> str:
        """The segment as stored: its header on the first line, then the text under it."""
        if self.header:
            return f"{self.header}\n{self.body}" if self.body else self.header
        return self.body


def clean_line(line: str) -> str:
    return _SPACES.sub(" ", line).strip()


_PRE = "\x00"  # marks a line from <pre>: kept verbatim (code indentation matters)


def join_lines(lines: list[str]) -> str:
    kept = (x[1:].rstrip() if x.startswith(_PRE) else clean_line(x) for x in lines)
    return "\n".join(line for line in kept if line.strip())


# --------------------------------------------------------------------------- HTML


def _is_boilerplate(node, settings: SegmentSettings, class_tokens: set[str]) -> bool:
    attrs = node.attributes
    role = (attrs.get("role") or "").strip().lower()
    if role and role in settings.remove_roles:
        return True
    if attrs.get("aria-hidden") == "true" or "hidden" in attrs:
        return True
    names = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".lower()
    if not names.strip():
        return False
    # Whole-token match against the joined tokens and single tokens: "site-footer" ->
    # {"site", "footer"}, so "footer" matches; "navigator" does not match "nav".
    tokens = {t for t in _TOKEN_SPLIT.split(names) if t}
    whole = {n for n in names.split() if n}
    return bool(class_tokens & (tokens | whole))


def segment_html(html: str, settings: SegmentSettings) -> list[Section]:
    """Sections of an HTML page in document order; ``[]`` when it has no text at all."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return []
    removable = set(settings.remove_tags)
    class_tokens = {t.lower() for t in settings.remove_class_tokens}

    sections: list[Section] = []
    header: str = ""
    lines: list[str] = []
    current: list[str] = []

    def end_line() -> None:
        if current:
            lines.append("".join(current))
            current.clear()

    def end_section() -> None:
        end_line()
        body = join_lines(lines)
        if header or body:
            sections.append(Section(header, body))
        lines.clear()

    # Iterative pre-order walk: deeply nested (or maliciously deep) pages must not hit
    # Python's recursion limit. A ``None`` entry marks the end of a block element.
    stack: list = [root]
    while stack:
        node = stack.pop()
        if node is None:
            end_line()
            continue
        if node.is_text_node:
            current.append(node.text_content or "")
            continue
        if not node.is_element_node:
            continue  # comments, doctype
        tag = node.tag
        if tag in removable or _is_boilerplate(node, settings, class_tokens):
            continue
        if tag in HEADING_TAGS:
            end_section()
            header = clean_line(node.text(deep=True, separator=" "))
            continue
        if tag == "pre":
            # Code keeps its line breaks and indentation.
            end_line()
            code = (node.text(deep=True) or "").strip("\n")
            if code.strip():
                lines.extend(_PRE + line for line in code.splitlines())
            continue
        if tag in BLOCK_TAGS:
            end_line()
            stack.append(None)
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend(reversed(children))
    end_section()
    return sections


# --------------------------------------------------------------------------- Markdown / rST

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_RST_DIRECTIVE = re.compile(r"^\.\. (image|figure|raw|\|)")


def _clean_markdown_line(line: str) -> str:
    # Badges and images carry no text; links keep their words; inline HTML loses its tags.
    line = _IMAGE.sub("", line)
    line = _LINK.sub(r"\1", line)
    return _HTML_TAG.sub("", line)


def segment_markdown(text: str) -> list[Section]:
    """Sections of Markdown or reStructuredText: ATX (``#``) and underlined headings."""
    sections: list[Section] = []
    header = ""
    lines: list[str] = []
    in_fence = False

    def end_section() -> None:
        body = "\n".join(x.rstrip() for x in lines).strip("\n")
        body = re.sub(r"\n{3,}", "\n\n", body)
        if header or body.strip():
            sections.append(Section(header, body))
        lines.clear()

    raw = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(raw):
        line = raw[i]
        if _FENCE.match(line):
            in_fence = not in_fence
            lines.append(line)
            i += 1
            continue
        if in_fence:
            lines.append(line)
            i += 1
            continue
        atx = _ATX.match(line)
        if atx:
            end_section()
            header = clean_line(_clean_markdown_line(atx.group(2)))
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        title = line.strip()
        if (
            title
            and _UNDERLINE.match(nxt)
            and len(nxt.strip()) >= max(3, len(title) - 1)
            and not _UNDERLINE.match(line)
        ):
            # Drop an rST overline already copied into the previous section.
            if lines and _UNDERLINE.match(lines[-1]) and lines[-1].strip()[0] == nxt.strip()[0]:
                lines.pop()
            end_section()
            header = clean_line(_clean_markdown_line(title))
            i += 2
            continue
        if _REF_DEF.match(line) or _RST_DIRECTIVE.match(line):
            i += 1
            continue
        lines.append(_clean_markdown_line(line))
        i += 1
    end_section()
    return sections


def segment_text(text: str) -> list[Section]:
    """Plain text (a web-corpus row, a .txt file): the whole text, no header."""
    body = "\n".join(clean_line(x) for x in text.splitlines())
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return [Section(None, body)] if body else []


def segment_document(text: str, kind: str, settings: SegmentSettings) -> tuple[list[Section], str]:
    """``(sections, reject_reason)``; the reason is "" unless the document yields nothing."""
    if kind == "html":
        sections = segment_html(text, settings)
    elif kind == "markdown":
        sections = segment_markdown(text)
    else:
        sections = segment_text(text)
    if not sections:
        return [], "no_text"
    if kind in ("html", "markdown") and not any(s.header for s in sections):
        if settings.headerless == "reject":
            return [], "no_headers"
        body = "\n".join(s.body for s in sections if s.body)
        return [Section(None, body)], ""
    return sections, ""
