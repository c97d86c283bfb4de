"""Answers, prompts, reasoning and registry text as safe HTML for the page (docs/security.md).

A model's answer is untrusted input, as is a prompt (shown back to its author, but also to
whoever reads a shared screen) and registry text. Markdown is rendered here, on the server,
with markdown-it-py; the HTML is then cleaned by nh3 (the Rust `ammonia` sanitiser) against a
short allowlist, and handed to the page as one HTML block that Gradio's markdown step passes
through unchanged. So what the browser shows is decided here, by one parser: no second
markdown parser in the browser can read the text differently.

The allowlist: text structure (paragraphs, headings, lists, tables, quotes, code, emphasis,
`details`) and links to http, https and mailto addresses, which open in a new tab with
rel="nofollow noopener noreferrer". Nothing else: no `style` attribute or element, no `class`
or `id` from the text, no forms, inputs or buttons, no iframes, objects, embeds, SVG or MathML,
no event handlers, no `javascript:` or `data:` addresses, no relative addresses. Images are
fetched only where the operator allows it (`[security] remote_images`); otherwise an image is
shown as a link to it (or its alt text) and never loaded. Code keeps its text exactly: an
answer's HTML inside a code block is shown as source.

Cost is bounded. markdown-it-py is pure Python and some inputs cost it 30 µs a character, so:
a message is cut into blocks where markdown starts afresh (blank lines, code fences) and each
finished block is rendered once (cached), which makes a streamed answer cost about one render
in all, not one per update; the unfinished last block of a streaming answer is shown as plain
text while it is long; a block over BLOCK_LIMIT that is not fenced code is shown as plain text;
and past MARKDOWN_LIMIT characters a message is shown as plain text, with a note. Plain text
costs one `html.escape`. Code with a language is coloured by Pygments, in the Prism class names
whose colours Gradio's page already has. Figures: docs/benchmarks.md, "Rendering answers".

While an answer streams, its unfinished last block shows its inline markup as it will look
finished (`**Point` bold already, a link still arriving as its text): the markup is closed in
the block's markdown source, which is then rendered and cleaned like the rest.

LaTeX between `$$ … $$`, `\\( … \\)` or `\\[ … \\]` is kept as text for the page's KaTeX; a `$`
or `\\` anywhere else is written as `&#36;` or `&#92;`, so Gradio's LaTeX step (which looks for
the delimiters in the raw HTML) sees only those spans.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, isMdAsciiPunct, isPunctChar, isWhiteSpace
from markdown_it.renderer import RendererHTML
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments.lexer import Lexer  # type: ignore[import-untyped]
from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
from pygments.token import _TokenType  # type: ignore[import-untyped]
from pygments.util import ClassNotFound  # type: ignore[import-untyped]

# Code blocks with a language are coloured (Pygments, in the page's own Prism classes) up to
# this length; a streaming one only while it is under STREAM_TAIL_LIMIT.
HIGHLIGHT_LIMIT = 8_000
# Characters of a message rendered as markdown; the rest is shown as plain text.
MARKDOWN_LIMIT = 20_000
# A single block (text between blank lines) longer than this is shown as plain text, unless
# it is a fenced code block, which costs little to render.
BLOCK_LIMIT = 8_000
# While an answer streams, its unfinished last block is rendered as markdown only up to this
# length (it is rendered again on every update); longer, it shows as plain text until done.
STREAM_TAIL_LIMIT = 2_000

TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del",
        "details", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
        "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "rp", "rt", "ruby", "s",
        "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "u", "ul", "var",
    }
)  # fmt: skip
# Removed together with their content; any other tag not in TAGS is removed, its text kept.
DROP_WITH_CONTENT = frozenset({"script", "style", "template", "title", "textarea", "noscript"})
ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href"},
    "img": {"src", "alt"},
    "ol": {"start"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
ALIGN = {"td": {"align": {"left", "center", "right"}}, "th": {"align": {"left", "center", "right"}}}
LINK_REL = "nofollow noopener noreferrer"
LINK_SCHEMES = re.compile(r"(?i)(?:https?|mailto):")
IMAGE_SCHEMES = re.compile(r"(?i)https?:")

WRAP = "<div class=arena-md>"
PLAIN_NOTE = (
    '<p class="arena-note"><em>Shown as plain text from here on: '
    "the message is longer than {limit:,} characters.</em></p>"
)
# Gradio's own copy button for code blocks (its page-wide handler copies the block's text).
COPY_BUTTON = (
    '<button title="copy" class="copy_code_button"><span class="copy-text">'
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 15 15" color="currentColor" '
    'aria-hidden="true" aria-label="Copy" stroke-width="1.3" width="15" height="15">'
    '<path fill="currentColor" d="M12.728 4.545v8.182H4.545V4.545zm0 -0.909H4.545a0.909 0.909 '
    "0 0 0 -0.909 0.909v8.182a0.909 0.909 0 0 0 0.909 0.909h8.182a0.909 0.909 0 0 0 0.909 "
    '-0.909V4.545a0.909 0.909 0 0 0 -0.909 -0.909"/><path fill="currentColor" '
    'd="M1.818 8.182H0.909V1.818a0.909 0.909 0 0 1 0.909 -0.909h6.364v0.909H1.818Z"/></svg>'
    '</span><span class="check"><svg xmlns="http://www.w3.org/2000/svg" width="17" '
    'height="17" viewBox="0 0 17 17" aria-hidden="true" aria-label="Copied" fill="none" '
    'stroke="currentColor" stroke-width="1.3"><path d="m13.813 4.781 -7.438 7.438 -3.188 '
    '-3.188"/></svg></span></button>'
)

# Placeholders for LaTeX spans, from the Unicode private use area (removed from input first).
_MATH_OPEN, _MATH_CLOSE = "\ue000", "\ue001"
_MATH_SLOT = re.compile(f"{_MATH_OPEN}(\\d+){_MATH_CLOSE}")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_LIST_ITEM = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)
_LINES = re.compile(r"[^\n]*\n|[^\n]+\Z")
_IMG = re.compile(r"<img\b([^>]*)>")
_ATTR = re.compile(r'([a-z-]+)="([^"]*)"')


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr in ("href", "src"):
        url = value.strip()
        allowed = IMAGE_SCHEMES if tag == "img" else LINK_SCHEMES
        if not allowed.match(url):
            return None  # relative, javascript:, data:, …
        return url.replace("<", "%3C").replace(">", "%3E")
    if attr == "alt":
        return value.replace("<", "").replace(">", "")
    if attr in ("start", "colspan", "rowspan"):
        return value if value.isdigit() and len(value) <= 4 else None
    return value  # the rest is fixed by TAGS, ATTRIBUTES and ALIGN, or set by us


def _clean(fragment: str) -> str:
    return nh3.clean(
        fragment,
        tags=set(TAGS),
        clean_content_tags=set(DROP_WITH_CONTENT),
        attributes=ATTRIBUTES,
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel=LINK_REL,
        tag_attribute_values=ALIGN,
        set_tag_attribute_values={
            "a": {"target": "_blank"},
            "img": {"loading": "lazy", "referrerpolicy": "no-referrer"},
        },
        url_schemes={"http", "https", "mailto"},
        allowed_classes={"span": set(TOKEN_CLASSES)},
    )


def _image_kept(match: re.Match[str]) -> str:
    """An allowed <img>; one whose address was removed (data:, relative) shows its alt text."""
    if ' src="' in match.group(0):
        return match.group(0)
    return dict(_ATTR.findall(match.group(1))).get("alt", "").strip() or "image"


def _image_as_link(match: re.Match[str]) -> str:
    """An <img> of nh3's output (attributes double-quoted, no `>` inside) as a link to it."""
    attrs = dict(_ATTR.findall(match.group(1)))
    label = attrs.get("alt", "").strip() or "image"
    src = attrs.get("src")
    if not src:
        return label
    return f'<a href="{src}" rel="{LINK_REL}" target="_blank">🖼 {label}</a>'


# -- markdown-it: LaTeX spans, images and table alignment --------------------------------------


# LaTeX delimiters the page renders (arena.ui.battle.LATEX), each opener with its closer.
# Reasoning models write `\( … \)` and `\[ … \]` more often than `$$` (issue 7).
MATH_INLINE = {"$$": "$$", "\\(": "\\)", "\\[": "\\]"}
MATH_BLOCK = {"$$": "$$", "\\[": "\\]"}  # those that may open a display formula's line


def _math_inline(state: StateInline, silent: bool) -> bool:
    """A formula inside a line, kept whole: before the escape rule, which would turn `\\(`
    into `(`."""
    src, pos = state.src, state.pos
    closer = MATH_INLINE.get(src[pos : pos + 2])
    if closer is None:
        return False
    end = src.find(closer, pos + 2)
    if end <= pos + 2:
        return False
    if not silent:
        token = state.push("arena_math", "", 0)
        token.content = src[pos : end + 2]
    state.pos = end + 2
    return True


def _math_block(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """`$$` or `\\[` at the start of a line up to the line that ends with its closer: one
    display formula, even across lines that would otherwise start a list or end a paragraph."""
    if state.sCount[start] - state.blkIndent >= 4:
        return False
    pos = state.bMarks[start] + state.tShift[start]
    first = state.src[pos : state.eMarks[start]].rstrip()
    closer = MATH_BLOCK.get(first[:2])
    if closer is None:
        return False
    line = start
    rest = first[2:]
    if closer in rest:
        if not rest.endswith(closer) or rest.count(closer) > 1 or len(rest) == 2:
            return False  # text after the formula, or several: the inline rule's business
    else:
        line = start + 1
        while line < end:
            text = state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]]
            if closer in text:
                if not text.rstrip().endswith(closer) or text.count(closer) > 1:
                    return False
                break
            line += 1
        if line >= end:
            return False
    if silent:
        return True
    token = state.push("arena_math_block", "", 0)
    token.content = state.src[pos : state.eMarks[line]].rstrip()
    token.map = [start, line + 1]
    state.line = line + 1
    return True


def _math_slot(env: EnvType, formula: str) -> str:
    slots: list[str] = env.setdefault("math", [])
    slots.append(formula)
    return f"{_MATH_OPEN}{len(slots) - 1}{_MATH_CLOSE}"


def _render_math(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    return _math_slot(env, tokens[idx].content)


def _render_math_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    return f"<p>{_math_slot(env, tokens[idx].content)}</p>\n"


def _render_image_as_link(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env).strip()
    label = html.escape(alt or "image")
    src = str(token.attrGet("src") or "")
    if not IMAGE_SCHEMES.match(src):
        return label
    return f'<a href="{html.escape(src)}">🖼 {label}</a>'


# Pygments token types as the class names of Prism, whose colours Gradio's page already has.
PRISM = {
    "Keyword": "keyword", "Keyword.Constant": "boolean", "Keyword.Type": "class-name",
    "Name.Builtin": "builtin", "Name.Function": "function", "Name.Class": "class-name",
    "Name.Decorator": "function", "Name.Tag": "tag", "Name.Attribute": "attr-name",
    "Name.Variable": "variable", "Name.Constant": "constant", "Name.Namespace": "namespace",
    "Name.Entity": "entity", "String": "string", "String.Regex": "regex",
    "String.Symbol": "symbol", "Number": "number", "Operator": "operator",
    "Operator.Word": "keyword", "Punctuation": "punctuation", "Comment": "comment",
    "Comment.Preproc": "keyword", "Generic.Deleted": "deleted", "Generic.Inserted": "inserted",
    "Generic.Heading": "important", "Generic.Strong": "bold", "Generic.Emph": "italic",
}  # fmt: skip
TOKEN_CLASSES = frozenset({"token", *PRISM.values()})


@lru_cache(maxsize=256)
def _lexer(language: str) -> Lexer | None:
    try:  # exactly the code back: no newline stripped or added, no tab expanded
        return get_lexer_by_name(language, stripnl=False, stripall=False, ensurenl=False)
    except (ClassNotFound, ValueError):
        return None


@lru_cache(maxsize=1024)
def _prism(ttype: _TokenType) -> str | None:
    while ttype.parent is not None:
        name = str(ttype).removeprefix("Token.").removeprefix("Literal.")
        if name in PRISM:
            return PRISM[name]
        ttype = ttype.parent
    return None


def _highlight(code: str, language: str, attrs: str) -> str:
    """Coloured code for markdown-it's fence rule; "" leaves the code to be escaped plain."""
    lexer = _lexer(language.lower()) if language and len(code) <= HIGHLIGHT_LIMIT else None
    if lexer is None:
        return ""
    out = []
    for ttype, value in lexer.get_tokens(code):
        text = escapeHtml(value)
        kind = _prism(ttype)
        out.append(f'<span class="token {kind}">{text}</span>' if kind else text)
    return "".join(out)


def _parser(images: bool, highlight: bool) -> MarkdownIt:
    options: dict[str, Any] = {"html": True, "breaks": True, "linkify": False}
    if highlight:
        options["highlight"] = _highlight
    md = MarkdownIt("commonmark", options)
    md.enable(["table", "strikethrough"])
    md.inline.ruler.before("escape", "arena_math", _math_inline)
    md.block.ruler.before(
        "fence", "arena_math_block", _math_block, {"alt": ["paragraph", "blockquote", "list"]}
    )
    md.add_render_rule("arena_math", _render_math)
    md.add_render_rule("arena_math_block", _render_math_block)
    if not images:
        md.add_render_rule("image", _render_image_as_link)
    return md


_PARSERS = {(i, h): _parser(i, h) for i in (True, False) for h in (True, False)}


def _align_cells(tokens: list[Token]) -> None:
    """markdown-it aligns table cells with a style attribute, which is not allowed: use align."""
    for token in tokens:
        if token.type in ("th_open", "td_open"):
            style = str(token.attrGet("style") or "")
            if style.startswith("text-align:"):
                token.attrs.pop("style", None)
                token.attrSet("align", style.removeprefix("text-align:"))


# -- blocks -------------------------------------------------------------------------------------


def _opens_math(line: str) -> str | None:
    """The closer of the display formula that `line` (stripped) opens and leaves open."""
    closer = MATH_BLOCK.get(line[:2])
    if closer is None:
        return None
    if closer == "$$":
        return closer if line.count("$$") % 2 == 1 else None
    return closer if closer not in line else None


def blocks(text: str) -> list[str]:
    """`text` cut at blank lines where markdown would start afresh anyway: the next line is
    not indented, not a list item, and not inside a fenced code block or a display formula.
    With reference-style link definitions the text stays whole (they reach across blocks)."""
    if _REFERENCE.search(text):
        return [text]
    out: list[str] = []
    start = 0
    pos = 0
    fence: str | None = None
    math_closer: str | None = None  # inside a display formula that ends with this
    blank_before = fence_ended = False
    for line in _LINES.findall(text):
        stripped = line.strip(" \t\r\n")
        at_margin = bool(stripped) and line[0] not in " \t" and not _LIST_ITEM.match(line)
        # A new block after a blank line, before a code fence and after one: there markdown
        # starts afresh, so each fenced code block is a block of its own.
        fresh = at_margin and (blank_before or fence_ended or _FENCE.match(line) is not None)
        if fresh and fence is None and math_closer is None and pos > start:
            out.append(text[start:pos])
            start = pos
        fence_ended = False
        if fence is not None:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
                fence_ended = True
        elif math_closer is not None:
            if math_closer in stripped:
                math_closer = None
        elif m := _FENCE.match(line):
            marker = m.group(1)
            if not (marker[0] == "`" and "`" in m.group(2)):
                fence = marker
        elif closer := _opens_math(stripped):
            # A formula holds blocks together if it is closed further on, or may still be
            # arriving; `\[sic]` alone on a line must not make a long rest of the answer one
            # block, shown as plain text past BLOCK_LIMIT (review of issue 7).
            rest = text[pos + len(line) :]
            if closer in rest or len(rest) <= STREAM_TAIL_LIMIT:
                math_closer = closer
        blank_before = not stripped
        pos += len(line)
    out.append(text[start:])
    return out


# -- a growing block's unfinished inline markup -------------------------------------------------
# While an answer streams, `**Point` would show its asterisks until the closing `**` came, then
# jump to bold. So the growing block's last inline text (its last paragraph, heading or list
# item) is made to look finished, as chat UIs do it: open emphasis, strikethrough and code spans
# are closed, a partial link shows its text only, a lone trailing mark is hidden. This is done
# on the markdown source, which is then rendered and cleaned like any other text, never on the
# HTML; nothing in code or in math is touched. One pass of a regex over the tail: no more
# parsing than before.

_MARK = re.compile(r"\\[\s\S]?|`+|\$\$|\*+|_+|~+|!?\[|\]\(?")
_BACKTICKS = re.compile(r"`+")
_PAREN = re.compile(r"\\.|[()]")
# A fence anywhere a container (list item, quote) may put one: more code left alone, not less.
_ANY_FENCE = re.compile(r"[ \t>]*(?:(?:[-+*]|\d{1,9}[.)])[ \t]+)?(`{3,}|~{3,})(.*)")
_STARTS_INLINE = re.compile(r"[ \t>]*(?:#{1,6}|[-+*]|\d{1,9}[.)])(?:[ \t]|$)", re.MULTILINE)
_HEADING = re.compile(r"[ \t>]*#{1,6}(?:[ \t]|$)", re.MULTILINE)
_INDENTED = re.compile(r" {0,3}\t| {4}")
# A thematic break, or a setext heading's underline: no inline text to finish.
_RULE_LINE = re.compile(r"[ \t>]*(?:=+|-+|(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})\s*\Z")
# Where emphasis can start: not inside a word (`2*3`, `2**8`, `a_b`) nor after other symbols.
_WORD_START = frozenset(" \t\r\n([{\"'“‘«*_~")
_SNAKE = re.compile(r"[^\s_]*_+\w")  # `_private_name`: a word with `_` in it, not emphasis


@dataclass(slots=True)
class _Run:
    """An emphasis or strikethrough opener that has not been closed (yet)."""

    char: str
    pos: int
    size: int  # delimiters still open
    length: int  # of the whole run, for CommonMark's rule of 3
    both: bool  # could close as well as open
    shown: bool  # clearly emphasis: closed if the text stops here


@dataclass(slots=True)
class _Tail:
    """What is open at the end of some inline text, and what to cut from it."""

    runs: dict[str, list[_Run]] = field(default_factory=lambda: {"*": [], "_": [], "~": []})
    brackets: list[tuple[int, int]] = field(default_factory=list)  # `[`: where, text start
    cuts: list[tuple[int, int]] = field(default_factory=list)
    code: str = ""  # the backticks of a code span not closed


@lru_cache(maxsize=4096)
def _char_kind(char: str) -> tuple[bool, bool]:
    """Whether `char` is whitespace and whether punctuation, as markdown-it decides them."""
    return isWhiteSpace(ord(char)), isMdAsciiPunct(ord(char)) or isPunctChar(char)


def _flanking(text: str, start: int, end: int) -> tuple[bool, bool]:
    """CommonMark's left- and right-flanking of the delimiter run text[start:end] (as
    markdown-it's scanDelims decides them)."""
    space_before, punct_before = _char_kind(text[start - 1] if start else " ")
    space_after, punct_after = _char_kind(text[end] if end < len(text) else " ")
    left = not space_after and (not punct_after or space_before or punct_before)
    right = not space_before and (not punct_before or space_after or punct_after)
    return left, right


def _drop_after(tail: _Tail, pos: int) -> None:
    """Openers after `pos` stay text: a closer matched an opener before them."""
    for stack in tail.runs.values():
        while stack and stack[-1].pos > pos:
            stack.pop()


def _close_runs(tail: _Tail, char: str, size: int, length: int, opens: bool) -> int:
    """Match a closing run against the open runs of its mark; what of it is left."""
    stack = tail.runs[char]
    while size and stack:
        opener = stack[-1]
        total = opener.length + length
        if (opener.both or opens) and not total % 3 and (opener.length % 3 or length % 3):
            break  # the rule of 3 (checked against the nearest opener only: linear)
        used = 2 if opener.size >= 2 and size >= 2 else 1
        opener.size -= used
        size -= used
        _drop_after(tail, opener.pos)
        if not opener.size:
            stack.pop()
    return size


def _emphasis(tail: _Tail, text: str, start: int, end: int) -> None:
    char, length = text[start], end - start
    left, right = _flanking(text, start, end)
    before = text[start - 1] if start else " "
    if char == "_":
        opens = left and (not right or _char_kind(before)[1])
        closes = right and (not left or (end < len(text) and _char_kind(text[end])[1]))
    else:
        opens, closes = left, right
    size = _close_runs(tail, char, length, length, opens) if closes else length
    at_word_start = before in _WORD_START
    if size == length and end == len(text) and (char == "*" or at_word_start):
        tail.cuts.append((start, end))  # a lone mark at the very end: its text is to come
    elif opens and size and (char != "~" or size >= 2):
        shown = at_word_start and not (char == "_" and _SNAKE.match(text, end))
        tail.runs[char].append(_Run(char, start, size, length, closes, shown))


def _link_end(text: str, pos: int) -> int:
    """The end of a link's `(address "title")` from after its `(`; -1 if it is not there yet."""
    depth = 0
    for m in _PAREN.finditer(text, pos):
        if m.group() == "(":
            depth += 1
        elif m.group() == ")":
            if not depth:
                return m.end()
            depth -= 1
    return -1


def _bracket(tail: _Tail, text: str, m: re.Match[str]) -> int:
    """A `]` or `](`: where to read on from, or -1 when a link is still streaming (the end)."""
    if not tail.brackets:
        return m.end()
    start, text_start = tail.brackets.pop()
    if m.group() == "](":
        end = _link_end(text, m.end())
        if end >= 0:
            _drop_after(tail, start)  # emphasis inside a link's text stays inside it
            return end
    elif m.end() < len(text):
        return m.end()
    # `[text](http://exa` or `[text]` at the very end: its text only, for now
    tail.cuts += [(start, text_start), (m.start(), len(text))]
    return -1


def _scan(text: str) -> _Tail:
    tail = _Tail()
    pos = 0
    while m := _MARK.search(text, pos):
        mark, pos = m.group(), m.end()
        if mark[0] == "`":
            for run in _BACKTICKS.finditer(text, pos):
                if len(run.group()) == len(mark):
                    pos = run.end()
                    break
            else:  # a code span to the end: nothing after its opening is markup
                if text[pos:].strip():
                    tail.code = mark
                else:
                    tail.cuts.append((m.start(), pos))
                break
        elif mark in MATH_INLINE:
            end = text.find(MATH_INLINE[mark], pos)
            if end < 0:
                break  # a formula still streaming: its `_` and `*` are not emphasis
            pos = end + 2
        elif mark[0] in "*_~":
            _emphasis(tail, text, m.start(), pos)
        elif mark[-1] == "[":
            tail.brackets.append((m.start(), pos))
        elif mark[0] == "]" and (pos := _bracket(tail, text, m)) < 0:
            break
    tail.cuts += [(start, text_start) for start, text_start in tail.brackets]  # `[` alone
    return tail


def _inline_tail(block: str) -> int:
    """Where the inline text that `block` ends in starts (its last paragraph, heading or list
    item); -1 if the block ends in code (fenced, open or indented) or in a rule."""
    fence, start, pos, last = "", 0, 0, ""
    math: str | None = None  # inside a display formula that ends with this
    heading = quote = False
    for line in _LINES.findall(block):
        text, last = line.strip(), line
        opens_math = None if fence or math else _opens_math(text)
        if fence:
            closing = line.lstrip(" \t>").rstrip()
            if closing.startswith(fence) and not closing.strip(fence[0]):
                fence, start = "", pos + len(line)
        elif math:  # blank lines inside a display formula do not end it
            math = None if math in text else math
        elif (m := _ANY_FENCE.match(line)) and not (m[1][0] == "`" and "`" in m[2]):
            fence = m[1]
        elif not text:
            start = pos + len(line)
        elif heading or _STARTS_INLINE.match(line) or (text[0] == ">" and not quote):
            start = pos
        math = math or opens_math
        heading, quote = bool(_HEADING.match(line)), text.startswith(">")
        pos += len(line)
    if fence or _RULE_LINE.match(last):
        return -1
    if _INDENTED.match(block, start) and not _STARTS_INLINE.match(block, start):
        return -1
    return start


def _kept_end(text: str, cut_at: dict[int, int], end: int) -> int:
    """Where the text kept before `end` stops, cuts (by their ends) and whitespace left out."""
    while end > 0:
        if end in cut_at:
            end = cut_at[end]
        elif text[end - 1].isspace():
            end -= 1
        else:
            break
    return end


def _closers(text: str, tail: _Tail) -> str:
    """The marks that close what is open, innermost first; an opener with nothing after it
    yet (its text cut, say) is hidden instead, like a lone mark."""
    cut_at = {b: a for a, b in tail.cuts}
    end = _kept_end(text, cut_at, len(text))
    out = [tail.code]
    for run in sorted((r for s in tail.runs.values() for r in s if r.shown), key=lambda r: -r.pos):
        if run.pos + run.length >= end:
            tail.cuts.append((run.pos, run.pos + run.size))
            cut_at[run.pos + run.size] = run.pos
            end = _kept_end(text, cut_at, run.pos)
        else:
            out.append(run.char * run.size)
    return "".join(out)


def _finish_inline(block: str) -> str:
    """`block`, still growing, with its unfinished inline markup made to look finished."""
    start = _inline_tail(block)
    if start < 0:
        return block
    text = block[start:]
    tail = _scan(text)
    closers = _closers(text, tail)
    if not (tail.cuts or closers):
        return block
    kept, last = [], 0
    for cut_start, cut_end in sorted(tail.cuts):
        kept.append(text[last : max(cut_start, last)])
        last = max(last, cut_end)
    kept.append(text[last:])
    out = "".join(kept)
    end = len(out.rstrip())
    body, rest = out[:end], out[end:]
    if tail.code and body.endswith("`"):
        body += " "  # the closing run must not join the code's own last backticks
    if closers and (len(body) - len(body.rstrip("\\"))) % 2:
        body = body[:-1]  # a trailing `\` would escape the first closer
    return block[:start] + body + closers + rest


# -- output -------------------------------------------------------------------------------------


# Delimiters that are text: the page's KaTeX reads the page's text, where `&#92;(` is `\(`
# and `&#36;&#36;` is `$$` again, so an empty <wbr> keeps the two characters apart. Only in
# text, never inside a tag (whose quoted attributes may hold anything): the tag around a hit,
# if any, is matched from the nearest `<` before it, so the cost is per hit, not per tag.
_STRAY_DELIMITER = re.compile(r"&#92;(?=[(\[])|&#36;(?=&#36;)")
_TAG = re.compile(r"""<[^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*>""")


def _split_stray_delimiters(text: str) -> str:
    out: list[str] = []
    last = 0
    for hit in _STRAY_DELIMITER.finditer(text):
        at = hit.end()
        opening = text.rfind("<", 0, at)
        tag = _TAG.match(text, opening) if opening >= 0 else None
        if tag is not None and tag.end() > at:
            continue  # inside an attribute
        out += (text[last:at], "<wbr>")
        last = at
    return "".join(out) + text[last:] if out else text


def _one_line(fragment: str) -> str:
    """No raw newline, tab, dollar sign or backslash: Gradio's markdown step keeps one HTML line
    whole, its inspect.cleandoc has no tabs to expand, and neither its LaTeX step nor KaTeX
    finds a stray `$$`, `\\(` or `\\[` outside the formulas put back after this."""
    text = _split_stray_delimiters(fragment.replace("$", "&#36;").replace("\\", "&#92;"))
    return text.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")


def is_code(block: str) -> bool:
    """A fenced code block and nothing after it: cheap to render whatever its length, since
    markdown-it reads code line by line and no inline rule runs on it."""
    lines = _LINES.findall(block)
    opening = _FENCE.match(lines[0]) if lines else None
    if opening is None or (opening.group(1)[0] == "`" and "`" in opening.group(2)):
        return False
    fence = opening.group(1)
    for i, line in enumerate(lines[1:], 1):
        stripped = line.strip(" \t\r\n")
        if stripped.startswith(fence) and not stripped.strip(fence[0]):
            return all(not rest.strip(" \t\r\n") for rest in lines[i + 1 :])
    return True  # not closed (yet): code to the end


def _plain_block(text: str) -> str:
    return f'<p class="arena-plain">{_one_line(html.escape(text))}</p>'


@lru_cache(maxsize=8192)
def _markdown_block(text: str, images: bool) -> str:
    """A finished block: rendered once."""
    return _render_block(text, images)


def _render_block(text: str, images: bool, highlight: bool = True) -> str:
    env: dict[str, Any] = {}
    md = _PARSERS[images, highlight]
    tokens = md.parse(text, env)
    _align_cells(tokens)
    out = _clean(md.renderer.render(tokens, md.options, env))
    out = _IMG.sub(_image_kept if images else _image_as_link, out)
    if not images:  # every <img> became a link; were one left, it would show as text
        out = out.replace("<img", "&lt;img")
    out = out.replace("<pre>", f'<div class="code_wrap">{COPY_BUTTON}<pre>').replace(
        "</pre>", "</pre></div>"
    )
    out = _one_line(out)
    slots = env.get("math", [])
    if slots:
        out = _MATH_SLOT.sub(lambda m: _one_line_math(slots[int(m.group(1))]), out)
    return out


def _one_line_math(formula: str) -> str:
    """A formula with its own delimiters, which the page's KaTeX reads: `\\(` stays inline."""
    body = html.escape(formula[2:-2], quote=False)
    body = body.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")
    return formula[:2] + body + formula[-2:]


def render(text: str, *, remote_images: bool = False, streaming: bool = False) -> str:
    """Markdown `text` as safe HTML on one line, inside `<div class=arena-md>` (unquoted, so the
    start of a message reads the same in the JSON that carries it).

    `streaming`: the text is still growing (a long unfinished last block stays plain text).
    `remote_images`: show images from other sites; otherwise they become links."""
    text = text.replace(_MATH_OPEN, "\ufffd").replace(_MATH_CLOSE, "\ufffd")
    head, rest = text, ""
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, MARKDOWN_LIMIT) + 1 or MARKDOWN_LIMIT
        head, rest = text[:cut], text[cut:]
    parts = blocks(head)
    out = []
    for i, block in enumerate(parts):
        growing = streaming and not rest and i == len(parts) - 1
        limit = STREAM_TAIL_LIMIT if growing else BLOCK_LIMIT
        if len(block) > limit and not is_code(block):
            out.append(_plain_block(block))
        elif growing:  # changes with every update: not worth a cache entry
            short = len(block) <= STREAM_TAIL_LIMIT  # longer: fenced code, left as it is
            shown = _finish_inline(block) if short else block
            out.append(_render_block(shown, remote_images, short))
        else:
            out.append(_markdown_block(block, remote_images))
    if rest:
        out.append(PLAIN_NOTE.format(limit=MARKDOWN_LIMIT))
        out.append(_plain_block(rest))
    return WRAP + "".join(out) + "</div>"


def plain(text: str) -> str:
    """`text` shown as written: no markup at all, line breaks kept."""
    return WRAP + _plain_block(text) + "</div>"


def inline(text: str) -> str:
    """`text` escaped for use inside HTML built here (a model name, a license)."""
    return _one_line(html.escape(text))
