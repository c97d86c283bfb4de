"""A client for reward models served by vLLM (issue 7): the scores best-of-N and process-reward
strategies choose by.

Two calls:

- `score(messages, answer)`, an outcome reward model (ORM): one score for one answer, through
  vLLM's Classification API (`/classify`, `api = "classify"`) or its Pooling API (`/pooling`,
  `api = "pooling"`).
- `step_scores(messages, steps)`, a process reward model (PRM): one score per step, always
  through `/pooling`, in the convention of Qwen2.5-Math-PRM (`Qwen2ForProcessRewardModel`).

Wire shapes (vLLM's docs/models/pooling_models/{README,classify,reward,token_classify}.md and
vllm/entrypoints/pooling/{base,classify,pooling}/protocol.py, lately under vllm/frontend/):

- Both APIs live at the server root, `POST /classify` and `POST /pooling`, not under `/v1`.
  `base_url` may be either the server root (`http://host:8000`) or the OpenAI-style base the
  chat endpoints use (`http://host:8000/v1`): a trailing `/v1` is dropped before the path is
  added, so the same URL serves a model's chat endpoint and its reward model's.
- The request is chat-like: `{"model", "messages"}`, the conversation with the answer as the
  last, assistant, message; vLLM renders it with the reward model's own chat template (what
  reward models such as Skywork-Reward-V2 and Qwen2.5-Math-PRM are trained on). No `task` is
  sent: vLLM then uses the model's own pooling task (`classify` for a sequence classifier,
  `token_classify` for a PRM), and the task names have changed between vLLM versions
  (`encode` was split into `token_embed` and `token_classify`).
- `/classify` answers `{"data": [{"index", "label", "probs": [...], "num_classes"}],
  "usage": {"prompt_tokens", ...}}`; `/pooling` answers `{"data": [{"index", "object":
  "pooling", "data": ...}], "usage": {...}}`, where `data` is a list of floats (a sequence
  classifier: its class probabilities) or a list of lists (a token-wise model: one row per
  token, or per step for a PRM).

From class probabilities to one score (`score`):

- one class (`num_labels = 1`, as Skywork-Reward-V2 and most sequence reward models have; vLLM
  applies a sigmoid unless the request turns activation off): that value is the score;
- two classes: the second, index 1, the probability of the positive class (HF's `LABEL_1`, the
  order binary classifiers and Qwen's PRM use: [negative, positive]);
- more than two: refused, as there is no telling which class means "good".

A token-wise outcome model at `/pooling` (Qwen2.5-Math-RM-72B, InternLM2 reward: one row per
token) is read at its last token, the row that has read the whole answer, by the same rule.

Process rewards (`step_scores`) follow Qwen2.5-Math-PRM's model card: the answer is the steps
joined by the step separator `<extra_0>`, with one after the last step too; vLLM's STEP pooling
returns one row per separator, `[p_negative, p_positive]`, and a step's score is `p_positive`.
A step's own `<extra_0>` would shift every score after it, so it is removed from the step's
text. Another PRM works if it is served with the same separator and [negative, positive]
rows (for Math-Shepherd, `--pooler-config` with `returned_token_ids` as [bad, good]).

Failures raise `ProviderError`s whose message names nothing (a voter may see it): `ConnectError`
when the server cannot be reached, `TotalTimeout` after `timeout` seconds, `EndpointError` for
an HTTP error status, a reply that is not the shape above, or a PRM that gives a number of step
scores other than the number of steps. What the server itself said is in `.detail` (and the
log), for the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from arena.answer_style import estimate_tokens
from arena.config import RewardEndpoint
from arena.errors import ConnectError, EndpointError, TotalTimeout
from arena.providers.base import ChatMessage
from arena.providers.http import bearer, body_text, error_body

log = logging.getLogger(__name__)

STEP_SEPARATOR = "<extra_0>"  # Qwen2.5-Math-PRM's step tag (token 151651)
MALFORMED = "The reward model sent a malformed answer."


@dataclass(frozen=True)
class Scored:
    """An outcome reward model's score of one answer."""

    score: float
    tokens: int  # tokens the reward model read (from its usage, else estimated)


@dataclass(frozen=True)
class StepScores:
    """A process reward model's score of each step of one answer."""

    scores: tuple[float, ...]  # one per step, in order
    tokens: int  # tokens the reward model read (from its usage, else estimated)


def server_root(base_url: str) -> str:
    """The server root of a reward endpoint's `base_url`: a trailing `/v1` dropped."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _status_message(status: int) -> str:
    """The voter's words for an HTTP error status from a reward model."""
    if status in (401, 403):
        return "The reward model refused our credentials."
    if status == 404:
        return "The reward model is not available at its endpoint."
    if status == 429:
        return "The reward model is busy right now (rate limited)."
    if status >= 500:
        return f"The reward model server failed (HTTP {status})."
    return f"The reward model rejected the request (HTTP {status})."


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EndpointError(MALFORMED, f"expected a finite number, got {value!r}"[:500])
    return float(value)


def class_score(probs: Any) -> float:
    """One score from a class probability (or logit) vector: see the module's docstring."""
    if not isinstance(probs, list) or not probs:
        raise EndpointError(MALFORMED, f"expected a list of class scores, got {probs!r}"[:500])
    if len(probs) == 1:
        return _number(probs[0])
    if len(probs) == 2:
        return _number(probs[1])
    raise EndpointError(
        MALFORMED,
        f"the reward model has {len(probs)} classes; Arena reads one class (the score) or two "
        "(the second is the positive one)",
    )


def pooled_score(data: Any) -> float:
    """One score from a `/pooling` item's `data`: a sequence classifier's class scores, or a
    token-wise model's rows, read at the last token."""
    if isinstance(data, list) and data and all(isinstance(row, list) for row in data):
        return class_score(data[-1])
    return class_score(data)


def step_probabilities(data: Any, steps: int) -> tuple[float, ...]:
    """Each step's score from a PRM's `/pooling` item `data`: rows of [p_negative, p_positive],
    one per step separator."""
    if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
        raise EndpointError(MALFORMED, f"expected one row per step, got {data!r}"[:500])
    if len(data) != steps:
        raise EndpointError(
            MALFORMED,
            f"the process reward model gave {len(data)} step scores for {steps} steps; is it a "
            f"PRM whose step separator is {STEP_SEPARATOR}, served with STEP pooling?",
        )
    return tuple(class_score(row) for row in data)


def _first_item(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise EndpointError(MALFORMED, "the reply is not a JSON object")
    data = payload.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise EndpointError(MALFORMED, "the reply has no `data` items")
    return data[0]


def _prompt_tokens(payload: Any) -> int | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("prompt_tokens")
    if tokens is None:
        tokens = usage.get("total_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
        return tokens
    return None


class RewardClient:
    """One reward model at one vLLM server, on a shared `httpx.AsyncClient`."""

    def __init__(
        self, client: httpx.AsyncClient, endpoint: RewardEndpoint, timeout: float = 60.0
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.timeout = timeout

    async def score(self, messages: Sequence[ChatMessage], answer: str) -> Scored:
        """The outcome reward of `answer` to the conversation `messages`."""
        chat = [*messages, ChatMessage("assistant", answer)]
        if self.endpoint.api == "classify":
            payload = await self._post("/classify", chat)
            with self._logged():
                score = class_score(_first_item(payload).get("probs"))
        else:
            payload = await self._post("/pooling", chat)
            with self._logged():
                score = pooled_score(_first_item(payload).get("data"))
        return Scored(score=score, tokens=self._tokens(payload, chat))

    async def step_scores(
        self, messages: Sequence[ChatMessage], steps: Sequence[str]
    ) -> StepScores:
        """The process reward of each of `steps`, an answer's steps in order, through
        `/pooling` whatever the endpoint's `api`. No steps: no request, no scores."""
        if not steps:
            return StepScores(scores=(), tokens=0)
        joined = "".join(step.replace(STEP_SEPARATOR, "") + STEP_SEPARATOR for step in steps)
        chat = [*messages, ChatMessage("assistant", joined)]
        payload = await self._post("/pooling", chat)
        with self._logged():
            scores = step_probabilities(_first_item(payload).get("data"), len(steps))
        return StepScores(scores=scores, tokens=self._tokens(payload, chat))

    @staticmethod
    def _tokens(payload: Any, chat: Sequence[ChatMessage]) -> int:
        tokens = _prompt_tokens(payload)
        if tokens is None:
            tokens = sum(estimate_tokens(m.content) for m in chat)
        return tokens

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", **bearer(self.endpoint.api_key)}

    async def _post(self, path: str, chat: Sequence[ChatMessage]) -> Any:
        """POST the conversation to `path` at the server root; the decoded JSON reply."""
        body = {
            "model": self.endpoint.model,
            "messages": [{"role": m.role, "content": m.content} for m in chat],
        }
        try:
            async with asyncio.timeout(self.timeout):
                return await self._send(server_root(self.endpoint.base_url) + path, body)
        except TimeoutError:
            self._warn("no answer within %s s", self.timeout)
            raise TotalTimeout("The reward model took too long to answer.") from None

    async def _send(self, url: str, body: dict[str, Any]) -> Any:
        request = self.client.build_request(
            "POST", url, json=body, headers=self._headers(), timeout=self.timeout
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.ConnectError:
            self._warn("cannot connect")
            raise ConnectError("The reward model could not be reached.") from None
        except httpx.TimeoutException:
            self._warn("timed out")
            raise TotalTimeout("The reward model took too long to answer.") from None
        except httpx.HTTPError as err:
            self._warn("%s", type(err).__name__)
            raise EndpointError("The connection to the reward model broke.") from None
        try:
            if response.status_code >= 400:
                said = body_text(await error_body(response))
                self._warn("HTTP %s: %s", response.status_code, said.replace("\n", " ")[:500])
                raise EndpointError(_status_message(response.status_code), said or None)
            raw = await response.aread()
        except httpx.TimeoutException:
            self._warn("timed out")
            raise TotalTimeout("The reward model took too long to answer.") from None
        except httpx.HTTPError as err:
            self._warn("%s", type(err).__name__)
            raise EndpointError("The connection to the reward model broke.") from None
        finally:
            await response.aclose()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = raw[:500].decode("utf-8", "replace")
            self._warn("a reply that is not JSON: %s", text.replace("\n", " "))
            raise EndpointError(MALFORMED, f"not JSON: {text}") from None

    @contextmanager
    def _logged(self) -> Iterator[None]:
        """Log a malformed reply's error with what was wrong with it."""
        try:
            yield
        except EndpointError as err:
            self._warn("%s (%s)", err, (err.detail or "").replace("\n", " ")[:500])
            raise

    def _warn(self, what: str, *args: Any) -> None:
        e = self.endpoint
        log.warning("reward model %s at %s: " + what, e.model, e.base_url, *args)
