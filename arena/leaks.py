"""Identity leaks: an answer that names a model or its maker is no longer a blind comparison.

Answers are checked, never prompts: dropping battles by what users ask would bias the votes by
topic (issue 8, §1). A leaking battle stays playable and is revealed as usual; the flag and the
terms found are stored with it, and the ratings job's `identity_leak` stage leaves its vote out.

Matching (docs/security.md):
- text is normalised first: NFKC, and format characters (zero-width spaces, joiners, bidi marks)
  removed, so "Cl\u200baude" is "Claude";
- a term matches as a whole word: "Meta" never matches "metadata";
- a term written as a capitalised word ("Meta", "Claude") matches in that case or all capitals,
  not in lower case, where it is an ordinary word ("meta-analysis"); every other term (with
  digits, inner capitals or lower case: "gpt-4o", "DeepSeek", "chatgpt") matches in any case;
- a term of three characters or fewer ("o1", "o3") is too common to match alone: it counts only
  where it is used as a name ("I am o1", "OpenAI o1", "o1-mini", "the o1 model").
"""

from __future__ import annotations

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
_WORD = re.compile(r"\w+")
_FORMAT = re.compile(r"[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def normalize(text: str) -> str:
    """NFKC, without format characters: what a reader sees, not how it was spelled."""
    if text.isascii():  # most answers: NFKC changes nothing and there are no format characters
        return text
    text = unicodedata.normalize("NFKC", text)
    text = _FORMAT.sub("", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _capitalised_word(term: str) -> bool:
    words = term.split()
    return all(w[:1].isupper() and w[1:].islower() and w.isalpha() for w in words)


def _pattern(term: str) -> str:
    body = r"\s+".join(re.escape(part) for part in normalize(term).split())
    if _capitalised_word(term):
        # "Meta" and "META", not "meta": the lower-case form is an ordinary word.
        upper = r"\s+".join(re.escape(part) for part in normalize(term).upper().split())
        body = f"(?:{body}|{upper})"
    else:
        body = f"(?i:{body})"
    word = rf"(?<!\w){body}(?!\w)"
    if len(term) <= SHORT:
        # A short name only where it is used as a name.
        lead = r"(?i:\b(?:I am|I'm|called|named|model|version|OpenAI(?:'s)?|the))\s+"
        trail = r"(?:[- ](?i:mini|preview|pro|model)\b)"
        return rf"(?:{lead}{word}|(?<!\w){re.escape(term)}{trail})"
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
        first = frozenset(_WORD.findall(normalize(t).lower())[0] for t in unique if _WORD.search(t))
        longest = max(len(normalize(t)) for t in unique)
        return cls(tuple(unique), re.compile(groups), first, longest)

    def matches(self, normalized: str) -> Iterator[re.Match[str]]:
        if self.first_words.isdisjoint(_WORD.findall(normalized.lower())):
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
