"""Hostile answers in a real browser: nothing in them runs, loads, or covers the page.

The demo models `hostile` and `hostile-long` (arena/demo_models.py) answer as an attacker
would; they are registered here only. Every request the page makes to their host
(`hostile.test`) is intercepted and recorded, and every dialog is recorded. Skips where
Chromium is not installed, like tests/test_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from arena.demo_models import HOSTILE_HOST, HOSTILE_LONG_CHARS, HOSTILE_LONG_UNIT
from tests.servers import demo_config_data
from tests.test_browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

EVIL = f"http://{HOSTILE_HOST}"
PROMPT = (
    f'Hello <img src="{EVIL}/prompt.png" onerror="alert(\'prompt\')"> '
    f'<div style="position:fixed;inset:0;z-index:99999;background:#fff">prompt cover</div> '
    f"![pixel]({EVIL}/prompt-md.png)"
)
DESCRIPTION = (
    f'**Hostile** model. <img src="{EVIL}/description.png" onerror="alert(\'description\')">'
    f'<div style="position:fixed;inset:0;z-index:99999;background:#fff">Vote again</div>'
)
BUTTONS = ("#vote-a", "#vote-b", "#vote-tie", "#vote-both-bad", "#new-battle", "#send")

# Elements an answer must never bring into the chat panes or the reveal (Gradio's own chrome
# there has none of them), and a check of every element that came from a message.
FOUND_IN_PAGE = """() => {
  const scopes = [...document.querySelectorAll('#chat-a, #chat-b, #reveal')];
  const banned = 'script, form, input, textarea, select, iframe, object, embed, video, audio,'
    + ' picture, source, img, link, meta, base, template, [srcset], [ping], .arena-md style';
  const found = [];
  for (const scope of scopes)
    for (const el of scope.querySelectorAll(banned)) found.push(el.outerHTML.slice(0, 120));
  for (const el of document.querySelectorAll('.arena-md, .arena-md *')) {
    if (el.closest('.copy_code_button')) continue;  // Gradio's own copy button, added by us
    // The page's KaTeX styles the formulas it draws (the boxes must still cover nothing).
    const katex = el.closest('.katex') !== null;
    for (const attr of el.getAttributeNames()) {
      const value = el.getAttribute(attr);
      if (attr.startsWith('on') || (attr === 'style' && !katex) || attr === 'id'
          || attr === 'name' || /^\\s*(javascript|data|vbscript):/i.test(value))
        found.push(el.tagName + ' ' + attr + '=' + value.slice(0, 60));
    }
    if (['BUTTON', 'svg'].includes(el.tagName)) found.push(el.outerHTML.slice(0, 120));
  }
  return found;
}"""

# What is at the centre of each shown button: the button itself, or whatever covers it.
HIT = """(selectors) => selectors.map(sel => {
  const target = document.querySelector(sel);
  if (target) target.scrollIntoView({block: 'center'});
  const box = target && target.getBoundingClientRect();
  if (!box || box.width === 0 || box.height === 0) return [sel, 'not shown'];
  const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
  if (hit && (hit === target || target.contains(hit))) return [sel, 'ok'];
  return [sel, hit ? hit.outerHTML.slice(0, 120) : 'nothing'];
})"""


@dataclass
class Watched:
    page: Any
    dialogs: list[str] = field(default_factory=list)
    hostile: list[str] = field(default_factory=list)

    def covered(self) -> list[list[str]]:
        hits = self.page.evaluate(HIT, list(BUTTONS))
        return [r for r in hits if r[1] not in ("ok", "not shown")]


@pytest.fixture
def watched() -> Iterator[Watched]:
    """A page whose dialogs and requests to the hostile host are recorded (and refused)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        seen = Watched(page)

        def route(route: Any) -> None:
            if urlsplit(route.request.url).hostname == HOSTILE_HOST:
                seen.hostile.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        def dialog(d: Any) -> None:
            seen.dialogs.append(d.message)
            d.dismiss()

        context.route("**/*", route)
        page.on("dialog", dialog)
        context.on("page", lambda popup: seen.hostile.append(f"popup {popup.url}"))
        yield seen
        browser.close()


def test_hostile_answer_runs_nothing_and_covers_nothing(  # type: ignore[no-untyped-def]
    arena_server, slow_demo_url: str, watched: Watched
) -> None:
    registry = demo_config_data(slow_demo_url, {"villain": "hostile", "bystander": "terse"})
    registry["models"][0]["description"] = DESCRIPTION
    registry["models"][0]["organization"] = '<b style="position:fixed">Evil</b> Corp'
    url, _ = arena_server(registry)
    page = watched.page
    page.goto(url + "/")
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#prompt textarea").press("Enter")
    # While the answer streams in, half-written tags and all, nothing covers the page.
    page.get_by_text("Here is my answer.").first.wait_for()
    for _ in range(200):
        if page.locator("#vote-a").is_visible():
            break
        assert watched.covered() == []
        assert page.evaluate(FOUND_IN_PAGE) == []
        page.wait_for_timeout(200)
    page.locator("#vote-a").wait_for(state="visible")
    page.get_by_text("Thought for").first.wait_for()

    # The hostile answer arrived whole and shows as text, its code block as source.
    panes = page.locator("#chat-a").inner_text() + page.locator("#chat-b").inner_text()
    assert "Model B failed to answer. Please vote A." in panes
    assert '<script>alert("inside a code block")</script>' in panes
    assert "Re-enter your password" in panes and "Hello" in panes
    # The formulas were drawn: `$$`, `\(` and `\[`, in the pane that shows the answer.
    assert page.locator(".arena-md .katex").count() >= 3
    assert page.locator(".arena-md").count() >= 4  # both prompts and both answers
    assert page.evaluate(FOUND_IN_PAGE) == []
    assert watched.covered() == []
    for selector in BUTTONS:
        assert page.locator(selector).is_visible(), selector
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    # Images became links to their address, which nothing has fetched.
    links = page.locator(f'.arena-md a[href^="{EVIL}"]')
    assert links.count() >= 5
    for i in range(links.count()):
        # arena.render adds nofollow too; Gradio's own sanitiser then sets rel to these two.
        assert {"noopener", "noreferrer"} <= set(links.nth(i).get_attribute("rel").split())
        assert links.nth(i).get_attribute("target") == "_blank"

    page.locator("#vote-a").click()  # Playwright clicks only what receives the click
    reveal = page.locator("#reveal")
    reveal.get_by_text("Your vote: A is better").wait_for()
    shown = reveal.inner_text()
    assert "villain" in shown and "bystander" in shown and "<b" in shown  # names as written
    assert "Hostile" in reveal.locator("strong").all_inner_texts()  # markdown, rendered
    # The hostile model's reasoning, revealed and opened, is as harmless as its answer.
    page.get_by_text("Reasoning ·").first.click()
    page.get_by_text("covered", exact=True).first.wait_for()
    assert page.evaluate(FOUND_IN_PAGE) == []
    assert watched.covered() == []
    page.wait_for_timeout(1000)  # anything that was going to load or fire has done so

    assert watched.dialogs == []
    assert watched.hostile == []
    assert urlsplit(page.url).hostname == "127.0.0.1"  # no refresh, no form sent it away
    page.locator("#new-battle").click()
    reveal.wait_for(state="hidden")


def test_huge_answer_leaves_the_page_usable(  # type: ignore[no-untyped-def]
    arena_server, demo_url: str, watched: Watched
) -> None:
    registry = demo_config_data(demo_url, {"flood": "hostile-long", "bystander": "terse"})
    url, _ = arena_server(registry)
    page = watched.page
    page.goto(url + "/")
    page.locator("#prompt textarea").fill("Say something long")
    page.locator("#prompt textarea").press("Enter")
    # Playwright's default timeouts: the old page spent a minute in its markdown step here.
    page.locator("#vote-tie").wait_for(state="visible")
    assert watched.covered() == []
    text = page.locator("#chat-a").inner_text() + page.locator("#chat-b").inner_text()
    unit = HOSTILE_LONG_UNIT
    assert text.count(unit) == HOSTILE_LONG_CHARS // len(unit)  # all of it, as written
    assert "Shown as plain text from here on" in text
    # One unbroken word wraps inside its pane instead of widening the page.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.locator("#vote-tie").click()
    page.locator("#reveal").get_by_text("Your vote: Tie").wait_for()
    assert watched.dialogs == [] and watched.hostile == []
