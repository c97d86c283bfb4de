"""Identity leaks: an answer that names a model or its maker is no longer a blind comparison.

Answers are checked, never prompts: dropping battles by what users ask would bias the votes by
topic (issue 8, §1). A leaking battle stays playable and is revealed as usual; the flag and the
terms found are stored with it, and the ratings job's `identity_leak` stage leaves its vote out.

Matching (docs/security.md):
- text is read as the page shows it (`normalize`): entities decoded, tags and emphasis marks
  removed, NFKD without accents or format characters, look-alike letters mapped to Latin, so
  "Cl\u200baude", "Cl**aude**" and "Сlaude" (Cyrillic С) are all "Claude";
- a term matches as a whole word, its words separated by any spaces, hyphens or underscores:
  "Meta" never matches "metadata";
- a single capitalised word ("Meta", "Claude") matches when it starts with its capital ("META",
  "MeTa"), not in lower case, where it is an ordinary word ("meta-analysis"); every other term
  ("gpt-4o", "DeepSeek", "Alpha Labs") matches in any case;
- a term of three characters or fewer ("o1", "o3") is too common to match alone: it counts only
  where it is used as a name ("I am o1", "OpenAI o1", "o1-mini", "the o1 model").
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Well-known model and company names. The start was FastChat's `identity_words`
# (fastchat/serve/monitor/clean_battle_data.py), the list the public arena filters on, with
# later models and makers added. Extend it with `[security] leak_terms`.
BUILTIN_TERMS: tuple[str, ...] = (
    # makers
    "OpenAI", "Anthropic", "Google", "DeepMind", "Meta AI", "Mistral AI", "Alibaba",
    "DeepSeek", "xAI", "Microsoft", "Cohere", "Databricks", "Zhipu", "Moonshot AI", "Baidu",
    "Tencent", "ByteDance", "01.AI", "AI21", "Nvidia", "NVIDIA", "LMSYS", "UC Berkeley",
    "LAION", "Allen Institute for AI", "AI2", "Hugging Face", "HuggingFace", "Perplexity",
    "Inflection AI", "Reka", "StepFun", "MiniMax", "Nous Research", "Amazon Bedrock",
    # models
    "ChatGPT", "GPT-3", "GPT-3.5", "GPT-4", "GPT-4o", "GPT-4.1", "GPT-4.5", "GPT-5",
    "gpt-oss", "o1", "o3", "o4-mini", "Claude", "Gemini", "Gemma", "Bard", "PaLM", "LaMDA",
    "Llama", "Vicuna", "Mistral", "Mixtral", "Codestral",
    "Qwen", "QwQ", "Tongyi", "Qianwen", "ChatGLM", "GLM-4", "Kimi", "Grok", "Phi-3", "Phi-4",
    "Command R", "Command R+", "DBRX", "Yi-34B", "Yi-Large", "Nemotron",
    "Jamba", "Tülu", "OLMo", "Open Assistant", "OpenAssistant", "ERNIE Bot", "Hunyuan",
    "Doubao", "InternLM", "Baichuan", "Falcon-180B", "StarCoder", "OpenChat", "WizardLM",
)  # fmt: skip

SHORT = 3  # terms this short need a naming context
_FIRST = re.compile(r"[^\W_]+")  # words as the terms' first words are cut: "_" separates


# Letters of other scripts that look like Latin ones (Unicode's confusables, the common part):
# "Сlaude" with a Cyrillic С reads as Claude.
_CONFUSABLE = str.maketrans(
    "АВЕЅІЈКМНОРСТХУаеѕіјорсхуԁɡΑΒΕΖΗΙΚΜΝΟΡΤΥΧοντ",
    "ABESIJKMHOPCTXYaesijopcxydgABEZHIKMNOPTYXovt",
)
# Markup a reader never sees: tags, and emphasis marks in or around a word ("Cl**aude**",
# "_Claude_"); an underscore inside a word is shown as it is ("hostile_alpha").
_TAG = re.compile(r"<[^<>]{0,200}>")
_INNER_MARK = re.compile(r"(?<=\w)[*~`]+(?=\w)|(?<=\w)[*_~`]+(?!\w)|(?<!\w)[*_~`]+(?=\w)")
_DASHES = re.compile(r"[\u2010-\u2015\u2212\u2043\ufe58\ufe63\uff0d]")


def normalize(text: str) -> str:
    """The text as a reader sees it, for matching only: entities decoded, tags and in-word
    emphasis marks removed, NFKD without accents or format characters, look-alike letters
    mapped to Latin and every dash to '-'."""
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _TAG.sub("", text)
    text = _INNER_MARK.sub("", text)
    if text.isascii():  # most answers: nothing more to undo
        return text
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Mn"))
    return _DASHES.sub("-", text.translate(_CONFUSABLE))


def _capitalised_word(term: str) -> bool:
    """A single capitalised word: "Meta", "Claude" (not "Alpha Labs", "ChatGPT", "o1")."""
    return term.isalpha() and term[:1].isupper() and term[1:].islower()


def _words(term: str) -> str:
    # Words of a term may be separated by any run of spaces, hyphens or underscores:
    # "hostile-alpha", "hostile alpha", "hostile_alpha", "hostile-\nalpha".
    parts = [p for p in re.split(r"[\s_-]+", normalize(term)) if p]
    return r"[\s_-]+".join(re.escape(p) for p in parts)


def _pattern(term: str) -> str:
    plain = normalize(term)
    if _capitalised_word(plain):
        # "Meta", "META", "MeTa", not "meta": the lower-case form is an ordinary word.
        body = re.escape(plain[0]) + f"(?i:{re.escape(plain[1:])})"
    else:
        body = f"(?i:{_words(term)})"
    word = rf"(?<![^\W_]){body}(?![^\W_])"
    if len(plain) <= SHORT:
        # A short name only where it is used as a name.
        lead = r"(?i:\b(?:I am|I'm|called|named|model|version|OpenAI(?:'s)?|the))\s+"
        trail = r"(?:[- ](?i:mini|preview|pro|model)\b)"
        return rf"(?:{lead}{word}|(?<!\w){re.escape(plain)}{trail})"
    return word


@dataclass(frozen=True)
class LeakRules:
    """The compiled terms: built once per registry, shared by every battle."""

    terms: tuple[str, ...]
    regex: re.Pattern[str] = field(repr=False)
    # The first word of every term, in lower case. A term can only match where its first word
    # is a word of the text, and a set lookup per word rules out nearly every stretch of an
    # answer at a small fraction of the cost of `regex` with its boundaries and case rules.
    first_words: frozenset[str] = field(repr=False)
    longest: int

    @classmethod
    def build(cls, terms: Iterable[str]) -> LeakRules:
        unique = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
        if not unique:
            return cls((), re.compile(r"(?!x)x"), frozenset(), 0)
        groups = "|".join(f"(?P<t{i}>{_pattern(t)})" for i, t in enumerate(unique))
        first = frozenset(
            _FIRST.findall(normalize(t).lower())[0] for t in unique if _FIRST.search(t)
        )
        longest = max(len(normalize(t)) for t in unique)
        return cls(tuple(unique), re.compile(groups), first, longest)

    def matches(self, normalized: str) -> Iterator[re.Match[str]]:
        if self.first_words.isdisjoint(_FIRST.findall(normalized.lower())):
            return iter(())
        return self.regex.finditer(normalized)

    def find(self, text: str) -> set[str]:
        """Every term the text says."""
        return {self._term(m) for m in self.matches(normalize(text))}

    def _term(self, match: re.Match[str]) -> str:
        assert match.lastgroup is not None
        return self.terms[int(match.lastgroup[1:])]

    def scanner(self) -> LeakScanner:
        return LeakScanner(self)


def rules_for(names: Iterable[str], extra: Iterable[str] = (), builtin: bool = True) -> LeakRules:
    """The terms to look for: registry names, organisations and aliases (given as `names`), the
    operator's own terms, and the built-in list."""
    return LeakRules.build([*names, *extra, *(BUILTIN_TERMS if builtin else ())])


class LeakScanner:
    """Checks one answer as it streams, looking at each stretch of text about once.

    Each `feed` scans from a little before where the last one stopped (the overlap holds the
    longest term), and ignores a match that touches the end of the text until more arrives: it
    may be the start of a longer word ("Meta" before "data").
    """

    STEP = 256  # characters to gather before a scan: fewer, longer scans cost less

    def __init__(self, rules: LeakRules) -> None:
        self.rules = rules
        self.found: set[str] = set()
        self._done = 0
        self._overlap = rules.longest + 32

    def feed(self, text: str, final: bool = False) -> None:
        if not self.rules.terms:
            return
        if len(text) < self._done:  # the text was replaced (think tags moved it out)
            self._done = 0
        if not final and len(text) - self._done < self.STEP:
            return  # wait for a stretch worth scanning; the final feed sees the rest
        start = max(0, self._done - self._overlap)
        window = normalize(text[start:])
        for match in self.rules.matches(window):
            if match.end() >= len(window) and not final:
                continue  # may go on as a longer word
            if start and match.start() == 0:
                continue  # no left context here; the last feed saw this text whole
            self.found.add(self.rules._term(match))
        self._done = len(text)
