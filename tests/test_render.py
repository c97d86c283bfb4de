"""arena.render: what an answer, a prompt or registry text may become on the page."""

from __future__ import annotations

import html
import random
from html.parser import HTMLParser

import pytest

from arena import render as rendering
from arena.battles import Reveal, RevealedSide, TurnView
from arena.demo_models import hostile, hostile_long
from arena.lifecycle import Outcome
from arena.render import BLOCK_LIMIT, MARKDOWN_LIMIT, STREAM_TAIL_LIMIT, blocks, render
from arena.ui.battle import LATEX, chat_messages, reveal_markdown

EVIL = "http://hostile.test"


class Elements(HTMLParser):
    """Every element of a fragment with its attributes, leaving out our own copy buttons."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._button_depth = 0
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if self._button_depth or "copy_code_button" in values.get("class", ""):
            if tag not in ("path", "img", "br", "hr"):  # void elements never close
                self._button_depth += 1
            return
        self.found.append((tag, values))

    def handle_endtag(self, tag: str) -> None:
        if self._button_depth and tag not in ("path",):
            self._button_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._button_depth:
            self.text.append(data)

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.found}


FORBIDDEN_TAGS = {
    "script", "style", "form", "input", "button", "textarea", "select", "iframe", "object",
    "embed", "svg", "math", "video", "audio", "source", "picture", "link", "meta", "base",
    "img", "template", "dialog",
}  # fmt: skip


def assert_safe(fragment: str, images: bool = False) -> Elements:
    parsed = Elements(fragment)
    allowed_here = {"img"} if images else set()
    assert not (parsed.tags() & (FORBIDDEN_TAGS - allowed_here)), parsed.tags()
    for tag, attrs in parsed.found:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("style", "id", "name", "srcset", "ping", "action", "formaction")
            if name in ("href", "src"):
                assert value.startswith(("http://", "https://", "mailto:")), (tag, name, value)
            if name == "class" and tag == "span":  # colours of code
                assert set(value.split()) <= rendering.TOKEN_CLASSES, value
            elif name == "class":
                assert tag in ("div", "p") and value.startswith(("arena-", "code_wrap")), value
        if tag == "a" and "href" in attrs:
            assert attrs["rel"] == "nofollow noopener noreferrer" and attrs["target"] == "_blank"
    assert "\n" not in fragment  # one line: Gradio's markdown step passes it through whole
    return parsed


PAYLOADS = {
    "script": '<script>alert("x")</script>',
    "event handler": "<img src=x onerror=alert(1)><p onclick=alert(1)>p</p>",
    "svg": "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "javascript link, html": '<a href="javascript:alert(1)">a</a><a href="JaVa&#x09;script:">b',
    "javascript link, markdown": "[a](javascript:alert(1)) [b](<javascript:alert(1)>)",
    "javascript autolink": "<javascript:alert(1)>",
    "data link": "[a](data:text/html;base64,PHNjcmlwdD4=) <a href='data:text/html,x'>b</a>",
    "iframe, object, embed": '<iframe src="//x"></iframe><object data=x></object><embed src=x>',
    "inline style": '<div style="position:fixed;inset:0;z-index:99999">Please vote A.</div>',
    "style element": "<style>body{display:none}</style>",
    "form": f'<form action="{EVIL}/s"><input type=password><button>Go</button></form>',
    "markdown image": f"![pixel]({EVIL}/p.png)",
    "html image": f'<img src="{EVIL}/p.png"><img srcset="{EVIL}/p.png 1x">',
    "css background": f'<div style="background:url({EVIL}/p.png)">x</div>',
    "reference image": f"![pixel][r]\n\n[r]: {EVIL}/p.png",
    "data image": "![x](data:image/png;base64,iVBORw0KGgo=)",
    "media": f'<video poster="{EVIL}/p.png" src=x></video><audio src=x></audio>',
    "meta, link, base": f'<meta http-equiv=refresh content="0;url={EVIL}"><link rel=stylesheet '
    f'href="{EVIL}/s.css"><base href="{EVIL}/">',
    "ping": f'<a href="{EVIL}/a" ping="{EVIL}/ping">a</a>',
    "dom clobbering": '<p id="vote-a" name="vote-a" class="copy_code_button">x</p>',
    "classes": '<span class="token keyword hide-me gradio-container">x</span>',
    "relative link": '<a href="/gradio_api/x">a</a> [b](/x) [c](//evil.example/x)',
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_each_payload_is_neutralised(payload: str) -> None:
    assert_safe(render(payload))
    assert_safe(render(f"Some text first.\n\n{payload}\n\nAnd after."))
    assert_safe(render(payload, streaming=True))


def test_the_hostile_demo_model_is_neutralised() -> None:
    answer = hostile([{"role": "user", "content": "hi"}], random.Random(0))
    for text in (answer.content, answer.reasoning):
        parsed = assert_safe(render(text))
        assert "hostile.test" not in "".join(  # no image kept, only links
            v for tag, attrs in parsed.found if tag != "a" for v in attrs.values()
        )
    shown = "".join(Elements(render(answer.content)).text)
    assert "Here is my answer." in shown and "Model B failed to answer" in shown


def test_images_become_links_unless_allowed() -> None:
    parsed = assert_safe(render(f'![a cat]({EVIL}/cat.png) <img src="{EVIL}/dog.png" alt="dog">'))
    links = [(attrs["href"], tag) for tag, attrs in parsed.found if tag == "a"]
    assert links == [(f"{EVIL}/cat.png", "a"), (f"{EVIL}/dog.png", "a")]
    assert "a cat" in "".join(parsed.text) and "dog" in "".join(parsed.text)
    assert Elements(render('<img src="x">')).tags() == {"div"}  # no address: its alt text
    assert "".join(Elements(render('<img src="x">')).text) == "image"

    cat = "![a cat](https://example.com/cat.png)"
    allowed = assert_safe(render(cat, remote_images=True), images=True)
    (img,) = [attrs for tag, attrs in allowed.found if tag == "img"]
    assert img == {
        "src": "https://example.com/cat.png",
        "alt": "a cat",
        "loading": "lazy",
        "referrerpolicy": "no-referrer",
    }
    # Even where images are allowed: only http(s), never data: or relative addresses.
    for text in ("![x](data:image/png;base64,AAAA)", '<img src="/gradio_api/file=x">'):
        kept = assert_safe(render(text, remote_images=True), images=True)
        assert "img" not in kept.tags()


def test_code_blocks_show_html_source_as_written() -> None:
    source = '<!doctype html>\n<script>alert("hi & bye")</script>\n<p style="color:red">x</p>'
    out = render(f"Here is an HTML page:\n\n```html\n{source}\n```\n\nAnd `<b>inline</b>` code.")
    parsed = assert_safe(out)
    assert "code" in parsed.tags() and "pre" in parsed.tags() and "b" not in parsed.tags()
    shown = "".join(parsed.text)
    assert source in shown  # decoded once by the browser: the exact source, not entities
    assert "<b>inline</b>" in shown
    assert "&amp;lt;" not in out  # not escaped twice
    assert 'class="copy_code_button"' in out  # Gradio's copy button for code blocks


def test_code_is_coloured_and_kept_exactly() -> None:
    code = 'def f(x):\n\treturn "$5" if x else [1, 2]  # <b>not bold</b>\n\n\nend = True\n'
    out = render(f"```python\n{code}```")
    parsed = assert_safe(out)
    classes = {a.get("class") for t, a in parsed.found if t == "span"}
    assert {"token keyword", "token string", "token comment", "token number"} <= classes
    assert code in "".join(parsed.text)  # every character, tabs and blank lines included
    plain_code = assert_safe(render(f"```no-such-language\n{code}```"))
    assert "span" not in plain_code.tags() and code in "".join(plain_code.text)
    long = "x = 1\n" * (rendering.HIGHLIGHT_LIMIT // 6 + 1)
    assert "token" not in render(f"```python\n{long}```")  # too long to colour: plain code
    # An answer's own spans keep only these classes (harmless colours), nothing else.
    assert '<span class="token keyword">x</span>' in render('<span class="token keyword hide">x')


def test_normal_markdown_still_renders() -> None:
    text = """# Title

## Section

Some **bold**, *italic*, ~~struck~~, `code` and a [link](https://example.com/a?b=1&c=2).
Next line.

- one
- two
  - nested

3. three
4. four

| Name | Score |
|:-----|------:|
| a    |     1 |

> quoted

```python
def f(x):
    return x * 2
```

---
"""
    parsed = assert_safe(render(text))
    tags = [tag for tag, _ in parsed.found]
    for tag in ("h1", "h2", "strong", "em", "s", "code", "a", "ul", "li", "ol", "table", "th"):
        assert tag in tags, tag
    for tag in ("td", "blockquote", "pre", "hr", "br"):
        assert tag in tags, tag
    attrs = dict(parsed.found)
    assert attrs["a"]["href"] == "https://example.com/a?b=1&c=2"
    assert attrs["ol"] == {"start": "3"}
    assert [a.get("align") for t, a in parsed.found if t in ("th", "td")] == ["left", "right"] * 2
    shown = "".join(parsed.text)
    assert "def f(x):\n    return x * 2" in shown


def test_one_html_line_with_latex_spans_only() -> None:
    out = render("Energy: $$E = m_1 c^2 * k$$ costs $5 or $10.\n\n$$\na\n+ b\n$$\n\n`$$x$$`")
    assert "\n" not in out and "\t" not in render("a\tb")
    assert "$$E = m_1 c^2 * k$$" in out  # no emphasis made of `_` or `*` inside
    assert "<em>" not in out
    assert "&#36;5" in out and "&#36;10" in out  # a lone dollar is not a delimiter
    assert "$$&#10;a&#10;+ b&#10;$$" in out  # a display formula, not a list
    assert "<code>&#36;<wbr>&#36;x&#36;<wbr>&#36;</code>" in out  # in code, dollars are text
    # Only our own placeholders are swapped back: the same characters in input are not.
    assert "\ue000" not in render("\ue0000\ue001 $$x$$")


def test_latex_between_backslash_delimiters_is_kept_for_the_page() -> None:
    # Reasoning models (DeepSeek-R1, Qwen) write \( … \) inside a line and \[ … \] on
    # lines of their own; markdown's escapes would turn them into ( and [ (issue 7).
    text = (
        "So \\(x_1 * y_2\\) and \\[a*b\\] inline, then:\n\n\\[\n\\frac{a}{b}\n\n- c\n\\]\n\n"
        "Done \\\\(not math\\\\) `\\(code\\)`"
    )
    out = render(text)
    assert "\\(x_1 * y_2\\)" in out and "\\[a*b\\]" in out
    assert "<em>" not in out and "<li>" not in out  # no emphasis or list made inside them
    assert "\\[&#10;\\frac{a}{b}&#10;&#10;- c&#10;\\]" in out  # one formula across a blank line
    # Outside a formula a backslash is text, written so that no delimiter shows in the HTML.
    # The page's KaTeX reads the page's text, where `&#92;` is a backslash again: <wbr> is not.
    assert "&#92;<wbr>(not math&#92;)" in out and "<code>&#92;<wbr>(code&#92;)</code>" in out
    assert blocks(text) == [
        text[: text.index("\\[\n")],
        text[text.index("\\[\n") : text.index("Done")],
        text[text.index("Done") :],
    ]
    # A `\[` never closed holds nothing together: the blocks after it render as markdown.
    rest = "\n\n".join(f"Point {i}: **bold**" for i in range(200))
    assert render(f"Intro\n\n\\[sic]\n\n{rest}").count("<strong>") == 200
    # Stray `$$` is split as `\(` is, in text but not inside a tag's attributes.
    linked = render('Costs \\$\\$5; [z](http://x.test/a\\(b "t \\\\(x")')
    assert "&#36;<wbr>&#36;5" in linked and 'title="t &#92;(x"' in linked
    # The page renders exactly the delimiters arena.render keeps.
    assert {(d["left"], d["right"]) for d in LATEX} == set(rendering.MATH_INLINE.items())
    assert all(d["display"] == (d["left"] in rendering.MATH_BLOCK) for d in LATEX)


def test_prompt_answer_reasoning_and_error_are_all_rendered_safely() -> None:
    evil = f'<img src="{EVIL}/x.png" onerror="alert(1)"><div style="position:fixed">x</div>'
    turns = (
        TurnView(prompt=evil, content=evil, thinking_seconds=1.0, done=True),
        TurnView(prompt="again", error=evil, done=True),
    )
    side = RevealedSide(
        model="m", organization="o", license="", description="", unreleased=False,
        reasoning=(evil, ""),
    )  # fmt: skip
    for messages in (chat_messages(turns), chat_messages(turns, side)):
        for message in messages:
            assert_safe(message["content"])


def test_reveal_escapes_names_and_cleans_descriptions() -> None:
    def side(name: str) -> RevealedSide:
        return RevealedSide(
            model=name,
            organization="<b>Org</b> *star*",
            license="MIT",
            description=f'**Strong** <img src="{EVIL}/d.png"><div style="position:fixed">x</div>',
            unreleased=True,
            reasoning=(),
        )

    reveal = Reveal(
        battle_id="b", outcome=Outcome.TIE, a=side("<script>alert(1)</script>"), b=side("b_x_")
    )
    out = reveal_markdown(reveal)
    parsed = assert_safe(out)
    shown = "".join(parsed.text)
    assert "Your vote: Tie" in shown
    assert "Model A: <script>alert(1)</script>" in shown  # shown as written
    assert "Model B: b_x_" in shown and "<b>Org</b> *star*" in shown
    assert "Strong" in shown and "strong" in parsed.tags()  # descriptions are markdown
    assert [attrs["href"] for tag, attrs in parsed.found if tag == "a"] == [f"{EVIL}/d.png"] * 2


# -- bounded cost: markdown is parsed once per block, and never past the limits ----------------


class Parsed:
    """Counts the characters markdown-it is given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chars = 0
        rendering._markdown_block.cache_clear()
        for parser in rendering._PARSERS.values():
            original = parser.parse

            def parse(src: str, env: object = None, original: object = original) -> object:
                self.chars += len(src)
                return original(src, env)  # type: ignore[operator]

            monkeypatch.setattr(parser, "parse", parse)


def test_blocks_cover_the_text_and_split_only_where_markdown_restarts() -> None:
    text = (
        "p1\n\np2\n\n- a\n\n- b\n\n```\nx\n\ny\n```\n\n    code\n\n    more\n\n"
        "$$\na\n\nb\n$$\n\nend"
    )
    parts = blocks(text)
    assert "".join(parts) == text
    assert parts == [
        "p1\n\n",
        "p2\n\n- a\n\n- b\n\n",  # a loose list stays one list
        "```\nx\n\ny\n```\n\n    code\n\n    more\n\n",  # fenced and indented code stay whole
        "$$\na\n\nb\n$$\n\n",
        "end",
    ]
    # A fence starts a block and its closing line ends one, blank line or not.
    assert blocks("Code:\n```\nx\n```\nAfter.") == ["Code:\n", "```\nx\n```\n", "After."]
    with_reference = "See [this][1].\n\nMore.\n\n[1]: https://example.com"
    assert blocks(with_reference) == [with_reference]
    assert 'href="https://example.com"' in render(with_reference)


def test_a_streamed_answer_is_parsed_about_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Parsed(monkeypatch)
    paragraph = "Some **bold** words and a [link](https://example.com). " * 8 + "\n\n"
    answer = paragraph * 40
    step = 37
    for end in range(step, len(answer), step):  # one render per streamed update
        render(answer[:end], streaming=True)
    final = render(answer)
    assert counter.chars < 2 * len(answer) + (len(answer) // step) * len(paragraph)
    rendering._markdown_block.cache_clear()
    assert final == render(answer)  # the same as a render from scratch


def test_long_answers_render_markdown_only_up_to_the_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = Parsed(monkeypatch)
    long = hostile_long([], random.Random(0)).content
    assert len(long) == 200_000
    out = render(long)
    assert counter.chars == 0  # one block longer than BLOCK_LIMIT: plain text, not parsed
    parsed = assert_safe(out)
    assert "".join(parsed.text).endswith(long[-1000:])  # all of it is shown, as written
    assert f"longer than {MARKDOWN_LIMIT:,} characters" in out

    words = ("word " * 40 + "\n\n") * 2000  # 400,000 characters of short paragraphs
    render(words)
    assert counter.chars <= MARKDOWN_LIMIT

    # Fenced code is cheap to render, so a long code block stays one, streaming or not; but
    # not when more text hides behind it in the same block.
    code = "```python\n" + "x = [1](2) ** 3  # ![y](z)\n" * 400 + "```\n"
    assert len(code) > BLOCK_LIMIT
    for text in (code, code[:-4]):
        shown = assert_safe(render(text, streaming=True))
        assert "pre" in shown.tags() and "arena-plain" not in render(text)
    counter.chars = 0
    tail = code + "- " + "![" * BLOCK_LIMIT
    assert 'class="arena-plain"' in render(tail) and counter.chars == 0

    streaming = "x " * (STREAM_TAIL_LIMIT + 10)  # a long unfinished block stays plain text
    assert 'class="arena-plain"' in render(streaming, streaming=True)
    assert 'class="arena-plain"' not in render(streaming)
    assert 'class="arena-plain"' in render("y " * BLOCK_LIMIT)


def test_plain_and_inline_show_text_as_written() -> None:
    text = "**not bold** <b>x</b> $$y$$ & \n second"
    # <wbr> shows nothing: it only keeps the page's KaTeX from reading `$$` there.
    assert html.unescape(rendering.inline(text).replace("<wbr>", "")) == text
    parsed = assert_safe(rendering.plain(text))
    assert "".join(parsed.text) == text and parsed.tags() <= {"div", "p", "wbr"}


# -- streaming: an unfinished last block looks finished ----------------------------------------


class Prose(HTMLParser):
    """The text of a fragment outside code, as the page shows it."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._code = 0
        self.feed(fragment)
        self.close()
        self.text = "".join(self.parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._code += tag in ("code", "pre", "button")

    def handle_endtag(self, tag: str) -> None:
        self._code -= tag in ("code", "pre", "button")

    def handle_data(self, data: str) -> None:
        if not self._code:
            self.parts.append(data)


# What the growing block shows, and the finished text it must render the same as.
AS_FINISHED = {
    "Hi **Point": "Hi **Point**",
    "Hi __Point": "Hi __Point__",
    "Gone ~~old news": "Gone ~~old news~~",
    "Use `pip inst": "Use `pip inst`",
    "Use `` a ` b": "Use `` a ` b``",
    "An *emphasis": "An *emphasis*",
    "An _emphasis": "An _emphasis_",
    "**Point*": "**Point**",  # half of the closing `**`
    "~~old~": "~~old~~",
    "- **Step 1:": "- **Step 1:**",
    "## **Title": "## **Title**",
    "*Hi **there": "*Hi **there***",
    "(*aside": "(*aside*",
    "Read **`code` first": "Read **`code` first**",
    "Energy $$E = m_1 c^2$$ is **key": "Energy $$E = m_1 c^2$$ is **key**",
    "First.\n\nSecond **point": "First.\n\nSecond **point**",
    "- done\n- **next": "- done\n- **next**",
    "See [the docs](https://exa": "See the docs",
    'See [the docs](https://example.com/a_(b) "Ti': "See the docs",
    "See [the docs": "See the docs",
    "See [the docs]": "See the docs",
    "See ![a cat](https://example.com/c": "See a cat",
    "**Read [the docs](https://x": "**Read the docs**",
    "[**bold** te": "**bold** te",
    "Hi **": "Hi",
    "Hi *": "Hi",
    "Use `": "Use",
    "See [": "See",
    "See ![": "See",
    "**Use `": "**Use**",
}


@pytest.mark.parametrize(("growing", "finished"), AS_FINISHED.items(), ids=AS_FINISHED.keys())
def test_unfinished_markup_streams_as_its_finished_form(growing: str, finished: str) -> None:
    out = render(growing, streaming=True)
    assert out == render(finished)
    assert_safe(out)


def test_a_streaming_bold_is_bold_at_once() -> None:
    out = render("Hi **Point", streaming=True)
    assert "<strong>Point</strong>" in out and "**" not in out
    link = render("Read [the docs](https://exa", streaming=True)
    assert "[" not in link and "exa" not in link and "<a" not in link


# Not unfinished markup, or not markup at all: shown while streaming just as when finished.
LEFT_ALONE = {
    "list bullet": "* item",
    "list bullets": "Steps:\n* one\n* two",
    "arithmetic": "2 * 3 = 6 and 4*5",
    "power": "2**8 is 256",
    "snake_case": "my_var and snake_case_name",
    "leading underscore": "call _private_name",
    "tilde": "about ~5 minutes",
    "closed markup": "**bold**, *it*, ~~old~~, `code`, [a](https://example.com/x).",
    "code span": "Use `**kwargs` and `a[0]`",
    "open fence": "```python\nx = 2 ** [3\ny = _z",
    "open fence, tildes": "~~~\n**x *y [z",
    "closed fence": "```\n**x\n```",
    "fence in a list": "- step:\n\n  ```sh\n  echo **x [y",
    "indented code": "Code:\n\n    x = **y [z",
    "open formula": "Energy $$E = m_1 * c^2 **",
    "display formula": "$$\na_1 * b_2\n\n[c **d",
    "open inline formula, backslash": "Energy \\(E = m_1 * c^2 **",
    "display formula, backslash": "\\[\na_1 * b_2\n\n[c **d",
    "rule": "Text\n\n***",
    "rule, spaced": "* * *",
    "setext heading": "Title **x\n---",
    "earlier paragraph": "Left **open\n\nNew paragraph.",
    "earlier list item": "- left **open\n- next",
    "quote after text": "left **open\n> quoted",
}


@pytest.mark.parametrize("text", LEFT_ALONE.values(), ids=LEFT_ALONE.keys())
def test_streaming_leaves_code_math_and_plain_symbols_alone(text: str) -> None:
    assert render(text, streaming=True) == render(text)


def test_code_spans_close_without_touching_their_content() -> None:
    assert render("Use `**kwargs", streaming=True) == render("Use `**kwargs`")
    assert render("Use `a_b [c", streaming=True) == render("Use `a_b [c`")


ANSWERS = [
    """## Installing **Arena**

To get started, install it with `pip install arena` and read
[the quick-start guide](https://example.com/docs/start?ref=a_b). You need:

- **Python 3.11** or newer (check with `python --version`)
- a *working* C compiler, for ~~old~~ native wheels
- about 2 * 3 = 6 minutes, and my_var stays as written

1. **Clone** the repository.
2. Run the __setup__ script: `./setup.sh --with-extras`.

```python
def power(base, exp):
    return base ** exp  # e.g. items[0] ** 2
```

> **Note:** the `snake_case_names` are _kept_.

Done! See ![the diagram](https://example.com/d.png) for _details_.
""",
    """| Method | Cost |
|:--|--:|
| **Bubble** sort | n squared |
| *Merge* sort | `n log n` |

The energy is $$E = m c^2 * k_1$$ and **not** more.

$$
a_1 * b_2 = c
$$

Use **`code` in bold** and *emphasis with [a link](https://example.com/x_(y))*.
""",
    """Here's a plan:

* **First**, gather the _requirements_.
    * Talk to __users__.
    * Read ~~everything~~ the important parts.
* **Then** write it up: see the [template](https://example.com/t "Template").

> *Tip:* keep it **short**,
> and ***very*** clear.

That's all, *really*.""",
]


@pytest.mark.parametrize("answer", ANSWERS, ids=["setup", "table and math", "plan"])
def test_no_prefix_shows_half_formed_markup(answer: str) -> None:
    final = render(answer)
    shown = Prose(final).text
    for mark in ("**", "__", "~~", "`", "["):
        assert mark not in shown, mark  # so none may show while it streams either
    assert render(answer, streaming=True) == final  # finished markup is left as it is
    for end in range(1, len(answer)):
        out = render(answer[:end], streaming=True)
        prefix = Prose(out).text
        for mark in ("**", "__", "~~", "`", "["):
            assert mark not in prefix, (answer[:end], prefix)
        assert_safe(out)


def test_a_finished_answer_renders_as_written() -> None:
    assert "**Point" in render("Hi **Point")  # done: what was written is what is shown
    assert "[the docs" in render("See [the docs")
    for text in [*ANSWERS, *AS_FINISHED]:
        expected = "".join(rendering._render_block(block, False) for block in blocks(text))
        assert render(text) == rendering.WRAP + expected + "</div>"
