"""Category tags for a battle's first prompt, so the leaderboard can be split by category.

Pure code: no database, no web framework, no network. Every stored battle is tagged once
(in a worker thread) and a backfill may tag millions, so every pattern is compiled at import
(about 0.1 s) and the language model is loaded once, lazily, behind a lock (about 0.5 s).
``RuleTagger.tag`` then takes 0.05-0.5 ms for a prompt of up to a few hundred characters and
a few ms at most for a long one (only the first ``scan_chars`` characters are read).

The rules are deliberately simple enough to predict by hand; docs/leaderboard.md
("Categories") states each one. The vocabulary lists are English; code syntax, LaTeX,
arithmetic and the language detector work in any language.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

FIXED_CATEGORIES: tuple[str, ...] = ("coding", "math", "long", "multi_turn", "hard")
# The approximated "hard prompts" criteria of the public Chatbot Arena (LMSYS, May 2024).
HARD_CRITERIA: tuple[str, ...] = (
    "specificity",
    "domain_knowledge",
    "complexity",
    "problem_solving",
    "creativity",
    "technical_accuracy",
    "real_world",
)


@dataclass(frozen=True)
class CategoryRules:
    """The thresholds of the rule tagger; they travel together. docs/leaderboard.md explains
    each default."""

    # `long`: more characters than this (about 500 tokens of English).
    long_prompt_chars: int = 2000
    # Only the first scan_chars characters are read by the coding/math/hard rules and the
    # first language_scan_chars (code removed) by the language detector; `long` counts all.
    scan_chars: int = 10_000
    language_scan_chars: int = 300
    # `coding` from weak syntax needs this many different kinds of it.
    coding_min_weak_syntax: int = 2
    # `math` from everyday math words needs this many different ones.
    math_min_weak_terms: int = 2
    # hard criteria
    specificity_min_markers: int = 2
    complexity_min_words: int = 40
    complexity_min_parts: int = 3
    hard_min_criteria: int = 5
    # language: fewer words (a Chinese, Japanese or Korean character counts as one), a
    # confidence below this, or py3langid's "no language" -> None
    language_min_words: int = 2
    language_min_confidence: float = 0.2

    def __post_init__(self) -> None:
        for name in (
            "long_prompt_chars",
            "scan_chars",
            "language_scan_chars",
            "coding_min_weak_syntax",
            "math_min_weak_terms",
            "specificity_min_markers",
            "complexity_min_words",
            "complexity_min_parts",
            "language_min_words",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 1 <= self.hard_min_criteria <= len(HARD_CRITERIA):
            raise ValueError(
                f"hard_min_criteria must be between 1 and {len(HARD_CRITERIA)}, "
                f"got {self.hard_min_criteria!r}"
            )
        if not 0.0 <= self.language_min_confidence <= 1.0:
            raise ValueError(
                f"language_min_confidence must be in [0, 1], got {self.language_min_confidence!r}"
            )


DEFAULT_RULES = CategoryRules()


@dataclass(frozen=True)
class Tags:
    """What a tagger found in a prompt.

    ``categories`` is a subset of {"coding", "math", "long", "hard"}; "multi_turn" is added by
    the caller once a follow-up is sent. ``language`` is an ISO 639-1 code, or None when it
    cannot be told (too short, only code or numbers, or a language without a 639-1 code).
    """

    categories: frozenset[str]
    language: str | None


@runtime_checkable
class Tagger(Protocol):
    """Tags one prompt. ``RuleTagger`` is the default.

    This is the seam for an optional LLM judge: a tagger that asks a registered model
    endpoint to classify the prompt can replace the rules without touching the callers.
    (No such judge is built yet.)
    """

    def tag(self, prompt: str) -> Tags: ...


# --- text helpers -------------------------------------------------------------------------
#
# Speed: CPython's regex engine is fast when a pattern starts with a literal character and
# slow when it starts with a lookbehind, \b or a class it must try at every position. Hence
# the literal-first patterns with the boundary checked after (r"#(?<=[Cc]#)..."), the term
# lists matched on lower-cased text without re.I, and the cheap "is the character there at
# all" guards before the patterns that cannot start with a literal.

_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"\b(?:https?://|www\.)\S+|[\w.+-]{1,64}@[\w-]{1,63}\.[\w.]+", re.I)
# Han and kana: no spaces between words, so each character counts as a word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# ... and with Hangul, the scripts that may touch a Latin term without a space
# ("写一个Python函数", "Python으로"): a listed term still matches there.
_EAST_ASIAN = _CJK + "\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
# For the language's minimum: a word of letters, each CJK or Hangul character counting as one.
_LETTER_WORD = re.compile(rf"[{_EAST_ASIAN}]|[^\W\d_{_EAST_ASIAN}]+")
# Parts for "complexity": sentences, clauses after ; or :, and lines (list items).
_PART_SPLIT = re.compile(r"[.!?;:\n。！？；：]+")


def _strip_code(text: str) -> str:
    """The prose of a prompt: fenced blocks, inline code, URLs and e-mail addresses removed."""
    if "```" in text or "~~~" in text:
        text = _FENCED.sub(" ", text)
    if "`" in text:
        text = _INLINE_CODE.sub(" ", text)
    if "://" in text or "www." in text or "@" in text:
        text = _URL.sub(" ", text)
    return text


def _trie(node: dict[str, Any]) -> str:
    optional = "" in node
    branches = [
        (r"\s+" if ch == " " else re.escape(ch)) + _trie(sub)
        for ch, sub in sorted(node.items())
        if ch
    ]
    if not branches:
        return ""
    if len(branches) == 1 and not optional:
        return branches[0]
    return "(?:" + "|".join(branches) + ")" + ("?" if optional else "")


def _terms(words: str) -> re.Pattern[str]:
    """Whole words or phrases from a '|'-separated list, to search in lower-cased text; a
    space matches any run of white space. Compiled as a trie (a few steps per position,
    however long the list). A term may not continue a word of a space-separated script ("api"
    is not found in "rapid") but may touch Chinese, Japanese or Korean text, and a term in
    those scripts may touch anything."""
    latin: dict[str, Any] = {}
    east_asian: list[str] = []
    for word in words.split("|"):
        word = word.strip().lower()
        if re.search(f"[{_EAST_ASIAN}]", word):
            east_asian.append(re.escape(word))
            continue
        node = latin
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    boundary = rf"[^\W{_EAST_ASIAN}]"
    pattern = rf"(?<!{boundary})(?:{_trie(latin)})(?!{boundary})"
    if east_asian:
        pattern += "|" + "|".join(east_asian)
    return re.compile(pattern)


def _distinct(pattern: re.Pattern[str], low: str) -> set[str]:
    return {" ".join(m.split()) for m in pattern.findall(low)}


# --- coding -------------------------------------------------------------------------------

# Any one of these makes a prompt `coding`. Case-sensitive on purpose: code is.
_CODE_SYNTAX: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.M)
    for p in (
        # at the start of a line: a fence, a definition, an include, an import, a shell
        # command after "$ ", a shebang, a Java/JavaScript stack frame
        r"^[ \t]*(?:```|~~~|#include[ \t]*[<\"]|#!/"
        r"|(?:async[ \t]+)?(?:def|fn|func|function)[ \t]+\w+[ \t]*[(<]"
        r"|(?:public|private|protected)[ \t]+(?:static[ \t]+)?[\w<>\[\]]+[ \t]+\w+[ \t]*\("
        r"|class[ \t]+[A-Z]\w*[ \t]*[(:{<]"
        r"|import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?[ \t]*;?[ \t]*$"
        r"|from[ \t]+[\w.]+[ \t]+import[ \t]+\w"
        r"|\$[ \t]+(?:pip|npm|git|docker|cd|ls|sudo|python3?|node|cargo|go|make)\b"
        r"|at [\w$.<>]+\([\w$.]+\.(?:java|kt|scala|js|ts|cs):\d+)",
        # stack traces and error messages: TypeError, NullPointerException, ...
        r"Traceback \(most recent call last\)|File \"[^\"\n]+\", line \d+",
        r"Error\b(?<=[a-z]Error)|Exception\b(?<=[a-z]Exception)",
        r"[Ss]egmentation fault|core dumped|panicked at|undefined reference to|npm ERR!"
        r"|error\[E\d{4}\]",
        # unmistakable calls and statements
        r"console\.log\(|System\.out\.print|std::|<\?php",
        r"SELECT\b[^;\n]{1,200}\bFROM\b|(?:CREATE|ALTER|DROP)[ \t]+TABLE\b|INSERT[ \t]+INTO\b",
        # C# the language, not the note (C# minor)
        r"#(?<=[Cc]#)(?<![\w#][Cc]#)(?![\w#]|[ \t]*(?:major|minor|maj|min|m)\b)",
    )
)
# Weak syntax: it takes coding_min_weak_syntax different kinds of these. Each is tried only
# when its guard character occurs.
_CODE_WEAK_SYNTAX: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (guard, re.compile(p, re.M))
    for guard, p in (
        ("`", r"`[^`\n]+`"),  # inline code
        ("=&|-:+", r"==|!=|&&|\|\||=>|->|::|\+\+|\+="),  # code operators
        (";", r";[ \t]*$"),  # a statement ending a line
        ("{}", r"^[ \t]*[{}][ \t]*$|\{[ \t]*$"),  # a brace opening a block or alone on a line
        ("(", r"\b\w+\.\w+\(|\b[a-z]+_\w+\(|\b[a-z]+[A-Z]\w*\("),  # a.b(, snake_case(, camelCase(
        ("[", r"\b[A-Za-z_]\w*\[[\w\"']+\]"),  # indexing: arr[i], d["k"]
        (  # a source file name
            ".",
            r"\.(?<=\w\.)(?:py|js|ts|tsx|jsx|java|cpp|hpp|cc|rs|rb|php|sh|ipynb|json|ya?ml"
            r"|toml|sql|kt|cs|go)\b",
        ),
        (
            "<",
            r"</?(?:div|span|html|body|head|script|style|button|input|form|table|tr|td|ul"
            r"|ol|li|p|a|img)\b[^>\n]*>",
        ),  # HTML tags
    )
)
# Any one of these words makes a prompt `coding`.
_CODE_TERMS = _terms(
    "javascript|typescript|c++|c++11|c++14|c++17|c++20|c++23|golang|kotlin|haskell|php|sql|nosql|mysql|postgres|postgresql"
    "|sqlite|mongodb|redis|graphql|html|html5|css|css3|json|jsonb|yaml|xml|regex|regexp|numpy"
    "|scipy|pytorch|tensorflow|keras|django|fastapi|node.js|nodejs|next.js|nextjs|vue.js|vuejs"
    "|reactjs|react.js|react native|react component|react hooks|angularjs|svelte|laravel"
    "|spring boot|asp.net|.net|npm|pip install|conda install|docker|dockerfile|kubernetes|k8s"
    "|github|gitlab|git|bash|powershell|zsh|api|apis|sdk|compiler|debugger|segfault"
    "|stack trace|stacktrace|dataframe|jupyter|vscode|vs code|visual studio|webpack|cmake"
    "|makefile|gcc|clang|llvm|jvm|frontend|backend|leetcode|unit test|unit tests|pytest|junit"
    "|recursion|recursive function|localhost|async|mutex|struct|enum|typedef|nullptr|stdout"
    "|stderr|stdin|runtime error|syntax error|compile error|compilation error|pull request"
    "|source code|codebase|programming|programmer|coding|code review|shader|opengl|cuda"
    "|verilog|vhdl|matlab|vba|arduino|oauth|jwt|websocket|rest api|http request|linter"
    "|refactor|refactoring"
    # "code" alone is often "dress code" or "zip code"; these phrases are not
    "|my code|this code|the following code|your code|some code|sample code|example code"
    "|write code|writing code|debug code|python code|java code|working code|broken code"
    "|buggy code|code snippet|code below|code above"
    "|编程|代码|源代码|程序员|プログラミング|ソースコード|코딩|프로그래밍|소스 코드"
)
# Programming languages named by ordinary words (python the snake, java the coffee, rust the
# oxide): they count only together with a word from _CODE_CONTEXT.
_CODE_AMBIGUOUS = _terms(
    "python|java|rust|swift|ruby|scala|julia|dart|perl|lua|elixir|pandas|flask|rails|shell|excel"
)
_CODE_LETTER_LANGUAGE = re.compile(r"\b(?i:in|using|with|for|learn)[ \t]+(?:C|R|Go)\b")
_CODE_CONTEXT = _terms(
    "code|coding|program|programs|programming|script|scripts|function|functions|method"
    "|methods|class|classes|variable|variables|library|libraries|package|packages|module"
    "|modules|compile|compiler|install|installed|installing|error|errors|exception"
    "|exceptions|bug|bugs|debug|syntax|loop|loops|array|arrays|string|strings|dict"
    "|dictionary|import|framework|version|object|objects|runtime|implement|implementation"
    "|algorithm|parse|parser|app|macro|macros|formula|formulas|query|type hint|type hints"
    "|generic|generics|crate|gem|file|files"
    "|代码|函数|脚本|变量|报错|程序|コード|関数|変数|プログラム|코드|함수|변수|프로그램"
)


def _is_coding(text: str, low: str, rules: CategoryRules) -> bool:
    if any(p.search(text) for p in _CODE_SYNTAX) or _CODE_TERMS.search(low):
        return True
    if (_CODE_AMBIGUOUS.search(low) or _CODE_LETTER_LANGUAGE.search(text)) and (
        _CODE_CONTEXT.search(low)
    ):
        return True
    kinds = 0
    for guard, pattern in _CODE_WEAK_SYNTAX:
        if any(ch in text for ch in guard) and pattern.search(text):
            kinds += 1
            if kinds >= rules.coding_min_weak_syntax:
                return True
    return False


# --- math ---------------------------------------------------------------------------------

# Any one of these makes a prompt `math`; each is tried only when its guard character occurs.
_MATH_SYNTAX: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (guard, re.compile(p, re.M))
    for guard, p in (
        # LaTeX: a command, an environment, display math, inline math with an operator
        (
            "\\",
            r"\\(?:d?frac|i?int|oint|sum|prod|sqrt|lim|infty|partial|nabla|alpha|beta|gamma"
            r"|delta|epsilon|theta|lambda|sigma|mu|pi|cdot|times|leq?|geq?|neq|approx|binom"
            r"|mathbb|mathrm|mathcal|vec|hat|log|ln|sin|cos|tan)\b"
            r"|\\begin\{(?:equation|align|[pbv]?matrix|cases)\*?\}|\\\[|\\\(",
        ),
        ("$", r"\$\$|\$[^$\n]*[\\^_=][^$\n]*\$"),
        ("", r"[∫∬∮∑∏√∞∂∇≤≥≠≈±÷∈∉⊂⊆∪∩∀∃]"),
        # arithmetic: 12*7, 3+4, 2^10, 6×7; minus and slash only spaced and followed by
        # "=", "?" or the end of a line (not "9 - 5 job", "2014 - 2015 season", "24/7")
        ("+*×^", r"\d[ \t]*[+*×^][ \t]*\(?-?\d"),
        ("-/", r"\d[ \t]+[-/][ \t]+\d+[ \t]*(?:=|\?|$)"),
        # a variable in an expression: x^2, 3x + 1, x = 5, f(x)
        ("^", r"\^(?<=[\w)]\^)[ \t]*\(?\w"),
        ("-+=", r"\d[ \t]*[a-z](?![a-z])[ \t]*[-+=][ \t]*\d"),
        ("=", r"=(?:(?<=(?<![\w.])[a-z]=)|(?<=(?<![\w.])[a-z] =))[ \t]*-?\d+(?:\.\d+)?(?![\w:/])"),
        ("(", r"\((?<=(?<![\w.])[fgh]\()[a-z]\)"),
    )
)
_MATH_TERMS = _terms(
    "integral|integrals|derivative|differentiate|antiderivative|differential equation"
    "|differential equations|equation|equations|theorem|lemma|corollary|prove that"
    "|probability|probabilities|polynomial|polynomials|matrices|eigenvalue|eigenvalues"
    "|eigenvector|eigenvectors|logarithm|logarithms|trigonometry|trigonometric|calculus"
    "|algebra|algebraic|geometry|arithmetic|factorial|prime number|prime numbers|solve for"
    "|hypotenuse|quadratic|square root|cube root|expected value|variance|standard deviation"
    "|permutation|permutations|combinatorics|modulo|modular arithmetic|gcd|lcm"
    "|greatest common divisor|least common multiple|how many ways|find the value of"
    "|real numbers|natural numbers|integers|rational number|rational numbers"
    "|irrational number|irrational numbers|denominator|numerator|exponent|exponents"
    "|vector space|linear algebra|topology|manifold|set theory|bayes|binomial|poisson"
    "|gaussian|normal distribution|sine|cosine|radian|radians|perimeter|circumference"
    "|pythagorean|parabola|asymptote|math|maths|mathematics|mathematical|geometric series"
    "|arithmetic series"
    "|方程|积分|导数|微积分|概率|数学|方程式|微分|積分|確率|방정식|적분|미분|확률|수학"
)
# Everyday words of math: it takes math_min_weak_terms different ones.
_MATH_WEAK = _terms(
    "sum|limit|vector|matrix|ratio|area|angle|triangle|circle|series|sequence|solve"
    "|calculate|compute|divisible|median|percentage|percent|average|graph|derivatives"
    "|inequality|exponential|tangent|determinant|combination|combinations|infinity|proof"
    "|converge|converges|diverge|diverges|digits|multiply|divide|divided by|squared|cubed"
    "|fraction|fractions|irrational"
)


def _is_math(prose: str, prose_low: str, rules: CategoryRules) -> bool:
    for guard, pattern in _MATH_SYNTAX:
        if (not guard or any(ch in prose for ch in guard)) and pattern.search(prose):
            return True
    if _MATH_TERMS.search(prose_low):
        return True
    return len(_distinct(_MATH_WEAK, prose_low)) >= rules.math_min_weak_terms


# --- hard ---------------------------------------------------------------------------------

# specificity: at least specificity_min_markers of these five groups occur (each counts once)
_SPEC_NUMBER = re.compile(r"\d")  # a number: "in 200 words", "3 examples", "Python 3.12"
_SPEC_QUOTE = re.compile(r"\"[^\"\n]{2,}\"|“[^”\n]{2,}”|«[^»\n]{2,}»|„[^“\n]{2,}“|`")
_SPEC_FORMAT = _terms(  # an output format
    "table|json|csv|yaml|xml|markdown|bullet|bullets|bullet points|numbered list|list of"
    "|outline|diagram|code block|step by step|step-by-step|format|formatted|template"
    "|schema|signature|example|examples|paragraph|paragraphs|sentence|sentences|words"
    "|word limit|word count|characters"
)
_SPEC_CONSTRAINT = _terms(  # a constraint
    "must|must not|should|shouldn't|should not|exactly|at least|at most|no more than"
    "|fewer than|less than|more than|without|only|ensure|make sure|require|requires"
    "|required|requirement|requirements|constraint|constraints|assume|assuming|avoid"
    "|do not|don't|never|always|handle|handles|edge case|edge cases"
)
_SPEC_IO = _terms(  # an input or output specification
    "return|returns|output|outputs|input|inputs|given|accept|accepts|parameter"
    "|parameters|argument|arguments|raise|raises|throw|throws|expected output"
    "|expected result|such that|takes a|takes an|takes the|takes two|takes three"
)
_DOMAIN_TERMS = _terms(
    # sciences and economics
    "quantum|relativity|thermodynamic|thermodynamics|entropy|photon|photons|electron"
    "|electrons|molecule|molecules|molecular|enzyme|enzymes|protein|proteins|genome|genomes"
    "|genetic|genetics|dna|rna|crispr|neuron|neurons|mitochondria|catalyst|catalysts|isotope"
    "|isotopes|wavelength|spectroscopy|chromatography|titration|covalent|orbital|orbitals"
    "|semiconductor|semiconductors|transistor|transistors|voltage|capacitor|capacitors"
    "|resistor|resistors|inductor|inductors|circuit|circuits|torque|tensile|viscosity"
    "|kinematics|finite element|fourier|laplace|bayesian|regression|hypothesis test|p-value"
    "|statistical|statistics|econometrics|inflation|monetary|fiscal|gdp|equity|amortization"
    "|depreciation|ebitda|valuation|capital gains|taxation"
    # law and medicine
    "|statute|statutes|tort|plaintiff|defendant|jurisdiction|liability|contract law|gdpr"
    "|hipaa|patent|patents|diagnosis|dosage|pharmacokinetics|contraindication"
    "|contraindications|pathology|antibody|antibodies|vaccine|vaccines|clinical|cardiology"
    "|oncology|insulin|epidemiology"
    # engineering and computing
    "|pid controller|microcontroller|microcontrollers|fpga|firmware|protocol|protocols|tcp"
    "|udp|latency|throughput|encryption|cryptography|hashing|blockchain|neural network"
    "|neural networks|machine learning|deep learning|backpropagation|reinforcement learning"
    "|llm|llms|embedding|embeddings|fine-tune|fine-tuning|finetune|finetuning|tokenizer"
    "|tokenizers|dataset|datasets|gpu|gpus|distributed system|distributed systems"
    "|consensus algorithm|concurrency|database|databases|operating system|operating systems"
    "|kernel|compilers"
    # humanities with a technical vocabulary
    "|epistemology|ontology|phenomenology|phoneme|phonemes|morphology|semantics"
)
_PROBLEM_SOLVING = _terms(
    "solve|solving|implement|implementing|debug|debugging|fix|fixing|optimize|optimise"
    "|optimizing|optimising|prove|derive|calculate|compute|design|architect|refactor|analyze"
    "|analyse|troubleshoot|diagnose|plan out|estimate|evaluate|compare|figure out|work out"
    "|find the|find a|find an|find all|determine|what's wrong|what is wrong|how can i"
    "|how do i|how should i|how would i|how could i|how can we|how do we|how should we"
)
# "write a function", "write me an efficient SQL query", "write unit tests" (lower-cased)
_PROBLEM_SOLVING_WRITE = re.compile(
    r"write(?<![\w-]write)[ \t]+(?:me[ \t]+)?(?:(?:a|an|the)[ \t]+)?(?:[\w+#-]+[ \t]+){0,3}?"
    r"(?:function|program|script|class|query|algorithm|proof|tests?|parser|regex|code"
    r"|implementation|solution|strategy)\b"
)
_CREATIVITY = _terms(
    "creative|creatively|creativity|novel approach|novel idea|novel way|novel method"
    "|original|innovative|invent|brainstorm|imagine|come up with|unique|unconventional|story"
    "|stories|poem|poetry|lyrics|fiction|fictional|metaphor|analogy|analogies|alternative"
    "|alternatives|elegant|clever|witty|humorous"
)
_TECHNICAL_ACCURACY = _terms(
    "precise|precisely|accurate|accurately|exact|correctness|rigorous|rigorously|formally"
    "|formal proof|specification|standards-compliant|compliant|ieee|numerically stable"
    "|thread-safe|thread safe|big-o|big o|time complexity|space complexity"
)
# a standard by number, a number with a unit (lower-cased text), a complexity class O(n)
_TECHNICAL_QUANTITY = re.compile(
    r"(?:rfc|iso)[ \t]?\d+"
    r"|\d(?:[ \t]?(?:%|ms|µs|ns|kb|mb|gb|tb|kib|mib|gib|kg|mg|km|cm|mm|nm|hz|khz|mhz|ghz|mv|kw"
    r"|mw|kwh|°c|°f|mol|psi|kpa|mpa|kj|kcal|fps|rpm|dpi|px|ppm|rps|qps))(?!\w)"
)
_BIG_O = re.compile(r"O\([^)\n]{1,20}\)")
_REAL_WORLD = _terms(
    "production|deploy|deployed|deploying|deployment|customer|customers|client|clients|users"
    "|business|company|startup|team|employee|employees|manager|budget|revenue|cost|costs"
    "|market|legal|contract|regulation|regulations|compliance|patient|patients|clinic"
    "|hospital|school|students|project|workflow|pipeline|real-world|real world|in practice"
    "|scalable|scalability|at scale|my app|my website|my site|my server|my database"
    "|my company|my team|my project|my business|my boss|my job|my startup|my store|my shop"
    "|my client|my customers|my landlord|my doctor"
)


# --- language -----------------------------------------------------------------------------

# py3langid labels without a 639-1 code of their own that belong to a macrolanguage with one.
# Other labels of three letters (e.g. "pcm", "grc") and "zxx" (no linguistic content) -> None.
_TO_ISO_639_1 = {
    "ary": "ar",  # Moroccan Arabic
    "arz": "ar",  # Egyptian Arabic
    "yue": "zh",  # Cantonese
    "wuu": "zh",  # Wu
    "uzs": "uz",  # Southern Uzbek
    "gug": "gn",  # Paraguayan Guarani
    "sdh": "ku",  # Southern Kurdish
    "fuv": "ff",  # Nigerian Fulfulde
    "ltg": "lv",  # Latgalian
    "kik": "ki",  # Kikuyu
}
_identifier: Any = None
_identifier_lock = threading.Lock()


def _language_model() -> Any:
    """py3langid's model (shipped inside the wheel), loaded on first use, once per process;
    its classify() only reads the model, so threads share it."""
    global _identifier
    identifier = _identifier
    if identifier is None:
        with _identifier_lock:
            if _identifier is None:
                from py3langid.langid import (  # type: ignore[import-untyped]
                    MODEL_FILE,
                    LanguageIdentifier,
                )

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier = _identifier
    return identifier


def _detect(prose: str, rules: CategoryRules) -> str | None:
    prose = prose[: rules.language_scan_chars]
    for words, _ in enumerate(_LETTER_WORD.finditer(prose), start=1):
        if words >= rules.language_min_words:
            break
    else:
        return None
    label, confidence = _language_model().classify(prose)
    if confidence < rules.language_min_confidence:
        return None
    code = str(label)
    return code if len(code) == 2 else _TO_ISO_639_1.get(code)


def detect_language(text: str, rules: CategoryRules = DEFAULT_RULES) -> str | None:
    """The ISO 639-1 code of the text's language, or None when it cannot be told.

    Code blocks, inline code, URLs and e-mail addresses are ignored, and only the first
    ``rules.language_scan_chars`` characters of the rest are read. None for fewer than
    ``rules.language_min_words`` words of letters (a Chinese, Japanese or Korean character
    counts as one), for py3langid's "no language" class (numbers, markup, identifiers),
    below ``rules.language_min_confidence``, and for the few languages py3langid knows that
    have no 639-1 code.
    """
    return _detect(_strip_code(text[: rules.scan_chars]), rules)


# --- the default tagger -------------------------------------------------------------------


class _Prompt:
    """One prompt's views, computed once: the scanned text, its prose, lower-cased copies."""

    __slots__ = ("coding", "low", "math", "prose", "prose_low", "text")

    def __init__(self, prompt: str, rules: CategoryRules) -> None:
        self.text = prompt[: rules.scan_chars]
        self.low = self.text.lower().replace("\u2019", "'")  # what’s -> what's
        self.prose = _strip_code(self.text)
        self.prose_low = self.prose.lower().replace("\u2019", "'")
        self.coding = _is_coding(self.text, self.low, rules)
        self.math = _is_math(self.prose, self.prose_low, rules)


def _specificity(p: _Prompt, rules: CategoryRules) -> bool:
    markers = 0
    for pattern, view in (
        (_SPEC_NUMBER, p.text),
        (_SPEC_QUOTE, p.text),
        (_SPEC_FORMAT, p.low),
        (_SPEC_CONSTRAINT, p.low),
        (_SPEC_IO, p.low),
    ):
        if pattern.search(view):
            markers += 1
            if markers >= rules.specificity_min_markers:
                return True
    return False


def _domain_knowledge(p: _Prompt, rules: CategoryRules) -> bool:
    return p.coding or p.math or _DOMAIN_TERMS.search(p.prose_low) is not None


def _complexity(p: _Prompt, rules: CategoryRules) -> bool:
    words = parts = 0
    for part in _PART_SPLIT.split(p.prose):
        n = len(_WORD.findall(part))
        words += n
        parts += n >= 3
        if words >= rules.complexity_min_words and parts >= rules.complexity_min_parts:
            return True
    return False


def _problem_solving(p: _Prompt, rules: CategoryRules) -> bool:
    return bool(_PROBLEM_SOLVING.search(p.prose_low) or _PROBLEM_SOLVING_WRITE.search(p.prose_low))


def _creativity(p: _Prompt, rules: CategoryRules) -> bool:
    return _CREATIVITY.search(p.prose_low) is not None


def _technical_accuracy(p: _Prompt, rules: CategoryRules) -> bool:
    return bool(
        p.coding
        or p.math
        or _TECHNICAL_ACCURACY.search(p.prose_low)
        or _TECHNICAL_QUANTITY.search(p.prose_low)
        or ("O(" in p.prose and _BIG_O.search(p.prose))
    )


def _real_world(p: _Prompt, rules: CategoryRules) -> bool:
    return _REAL_WORLD.search(p.prose_low) is not None


_HARD_CHECKS = (
    ("specificity", _specificity),
    ("domain_knowledge", _domain_knowledge),
    ("complexity", _complexity),
    ("problem_solving", _problem_solving),
    ("creativity", _creativity),
    ("technical_accuracy", _technical_accuracy),
    ("real_world", _real_world),
)
assert tuple(name for name, _ in _HARD_CHECKS) == HARD_CRITERIA


class RuleTagger:
    """The default Tagger: deterministic rules, documented in docs/leaderboard.md.

    Thread-safe: it keeps no state besides its rules, so one instance serves every worker.
    """

    def __init__(self, rules: CategoryRules = DEFAULT_RULES) -> None:
        self.rules = rules

    def tag(self, prompt: str) -> Tags:
        rules = self.rules
        p = _Prompt(prompt, rules)
        categories: set[str] = set()
        if p.coding:
            categories.add("coding")
        if p.math:
            categories.add("math")
        if len(prompt) > rules.long_prompt_chars:
            categories.add("long")
        if self._is_hard(p):
            categories.add("hard")
        return Tags(frozenset(categories), _detect(p.prose, rules))

    def hard_criteria(self, prompt: str) -> frozenset[str]:
        """Which of HARD_CRITERIA the prompt meets; it is `hard` when at least
        ``rules.hard_min_criteria`` of them hold."""
        p = _Prompt(prompt, self.rules)
        return frozenset(name for name, check in _HARD_CHECKS if check(p, self.rules))

    def _is_hard(self, p: _Prompt) -> bool:
        # Stops as soon as the outcome is known: most prompts miss the first few criteria.
        need = self.rules.hard_min_criteria
        met = 0
        for left, (_, check) in zip(range(len(_HARD_CHECKS), 0, -1), _HARD_CHECKS, strict=True):
            if met + left < need:
                return False
            if check(p, self.rules):
                met += 1
                if met >= need:
                    return True
        return False
