"""The composition strategies: several experts answer, then one answer comes out.

=============  =============================================================================
strategy       what happens after the k recruited experts (proposers) answer
=============  =============================================================================
``aggregate``  an aggregator reads the question and the answers and writes one answer
               (Symbolic-MoE; one Mixture-of-Agents layer)
``moa``        ``layers - 1`` more rounds in which each proposer revises, seeing the previous
               round's answers; then the aggregator (Mixture-of-Agents)
``select``     a judge picks the best answer; skipped when the answers already agree (SMoA's
               response selection with early stopping)
``vote``       the normalised short answer (number, option letter) with the most votes wins,
               each expert's vote counting its `weights` entry (1 without weights); ties go
               to the best-ranked expert (extractive tasks)
=============  =============================================================================

Experts that fail are recorded and left out; the composition goes on with what arrived and
fails (`CompositionFailed`) only when no proposer answered. The `Budget` bounds it: calls still
running at the deadline are cancelled and recorded as timed out, and a step whose estimated
cost would break `max_cost_usd` is skipped (with a note saying so) rather than made.

Example::

    composition = Composition(call, Budget.within(60, max_cost_usd=0.01), estimate)
    outcome = await composition.run("select", ["a", "b", "c"], messages, judge="a")
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from experts.compose.base import (
    Budget,
    Call,
    CompositionFailed,
    Estimate,
    Json,
    Outcome,
    Role,
    SubAnswer,
)
from experts.compose.templates import DEFAULT_TEMPLATES, Templates
from experts.errors import ExpertError, ExpertTimeout
from router.answers import normalise, option_letters
from router.query import routing_text

__all__ = ["STRATEGIES", "Composition"]

STRATEGIES = ("aggregate", "moa", "select", "vote")


class Composition:
    """One composed request: calls experts through `call`, within `budget`."""

    def __init__(
        self,
        call: Call,
        budget: Budget,
        estimate: Estimate,
        templates: Templates = DEFAULT_TEMPLATES,
    ) -> None:
        self.call = call
        self.budget = budget
        self.estimate = estimate
        self.templates = templates
        self.answers: list[SubAnswer] = []
        self.weights: dict[str, float] = {}

    async def _one(self, answer: SubAnswer, messages: list[Json]) -> None:
        started = time.perf_counter()
        try:
            reply = await self.call(answer.expert, messages)
        except ExpertError as exc:
            answer.error, answer.timed_out = exc.message, isinstance(exc, ExpertTimeout)
            answer.latency_ms = (time.perf_counter() - started) * 1000
            return
        answer.settle(reply, started)

    async def ask(
        self, experts: Sequence[str], messages: list[Json], role: Role, layer: int
    ) -> list[SubAnswer]:
        """Ask `experts` concurrently; answers in the order of `experts`, failures included."""
        answers = [SubAnswer(e, role, layer) for e in experts]
        self.answers.extend(answers)
        tasks = [asyncio.create_task(self._one(a, messages)) for a in answers]
        if not tasks:
            return answers
        _, pending = await asyncio.wait(tasks, timeout=self.budget.remaining_s())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for answer, task in zip(answers, tasks, strict=True):
            if task in pending:
                answer.error, answer.timed_out = "the composition's deadline passed", True
        self.budget.spent_usd += sum(a.cost_usd for a in answers)
        return answers

    def _affordable(self, experts: Sequence[str], messages: list[Json]) -> bool:
        return self.budget.affords(sum(self.estimate(e, messages) for e in experts))

    async def run(
        self,
        strategy: str,
        proposers: Sequence[str],
        messages: list[Json],
        *,
        aggregator: str | None = None,
        judge: str | None = None,
        layers: int = 2,
        weights: Mapping[str, float] | None = None,
    ) -> Outcome:
        """Compose `proposers`' answers to `messages` with `strategy` (one of `STRATEGIES`);
        `weights` are the experts' vote weights (their reliability on this query)."""
        self.weights = dict(weights or {})
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        first = [a for a in await self.ask(proposers, messages, "proposer", 1) if a.ok]
        if not first:
            raise CompositionFailed(self.answers)
        outcome = Outcome(strategy, self.answers)
        if strategy == "vote":
            return self._vote(outcome, first, messages)
        if strategy == "select":
            return await self._select(outcome, first, messages, judge)
        last = first
        if strategy == "moa":
            last = await self._layers(outcome, first, messages, layers, aggregator)
        return self._aggregate(outcome, last, messages, aggregator)

    async def _layers(
        self,
        outcome: Outcome,
        answers: list[SubAnswer],
        messages: list[Json],
        layers: int,
        aggregator: str | None,
    ) -> list[SubAnswer]:
        """MoA's intermediate layers: each proposer answers again, seeing the last layer; a
        layer is added only if it and the aggregator's call after it still fit the budget."""
        proposers = [a.expert for a in answers]
        closer = [aggregator] if aggregator is not None else []
        for layer in range(2, layers + 1):
            revise = self.templates.aggregate_messages(messages, [a.text for a in answers])
            affordable = self._affordable([*proposers, *closer], revise)
            if self.budget.remaining_s() <= 0 or not affordable:
                outcome.notes.append(f"stopped before layer {layer}: deadline or max_cost_usd")
                break
            arrived = [a for a in await self.ask(proposers, revise, "proposer", layer) if a.ok]
            if not arrived:
                outcome.notes.append(f"layer {layer} failed entirely: kept layer {layer - 1}")
                break
            answers = arrived
        return answers

    def _aggregate(
        self,
        outcome: Outcome,
        answers: list[SubAnswer],
        messages: list[Json],
        aggregator: str | None,
    ) -> Outcome:
        if len(answers) == 1:
            outcome.notes.append("one answer arrived: nothing to aggregate")
            return _take(outcome, answers[0])
        final = self.templates.aggregate_messages(messages, [a.text for a in answers])
        if aggregator is None:
            outcome.notes.append("no aggregator available: took the best-ranked answer")
            return _take(outcome, answers[0])
        if not self._affordable([aggregator], final):
            outcome.notes.append("the aggregator would break max_cost_usd: took the best-ranked")
            return _take(outcome, answers[0])
        outcome.final_call = (aggregator, final)
        return outcome

    def _vote(self, outcome: Outcome, answers: list[SubAnswer], messages: list[Json]) -> Outcome:
        letters = option_letters(routing_text(messages))
        keys = [normalise(a.text, letters) for a in answers]
        outcome.votes = dict(Counter(keys))
        weight: dict[str, float] = {}
        for key, a in zip(keys, answers, strict=True):
            weight[key] = weight.get(key, 0.0) + self.weights.get(a.expert, 1.0)
        top = max(weight.values())
        winner = next(k for k in keys if weight[k] >= top - 1e-12)  # ties: best-ranked first
        return _take(outcome, answers[keys.index(winner)])

    async def _select(
        self, outcome: Outcome, answers: list[SubAnswer], messages: list[Json], judge: str | None
    ) -> Outcome:
        letters = option_letters(routing_text(messages))
        if len({normalise(a.text, letters) for a in answers}) == 1:
            outcome.early_stopped = True
            outcome.notes.append("the answers agree: no judge needed")
            return _take(outcome, answers[0])
        prompt = self.templates.select_messages(routing_text(messages), [a.text for a in answers])
        if judge is None or not self._affordable([judge], prompt):
            outcome.notes.append("no affordable judge: fell back to a vote")
            return self._vote(outcome, answers, messages)
        verdict = (await self.ask([judge], prompt, "judge", 2))[0]
        choice = _choice(verdict.text, len(answers)) if verdict.ok else None
        if choice is None:
            why = verdict.error or f"judge answered {verdict.text[:80]!r}, not a number"
            outcome.notes.append(f"no verdict ({why}): fell back to a vote")
            return self._vote(outcome, answers, messages)
        return _take(outcome, answers[choice])


def _take(outcome: Outcome, answer: SubAnswer) -> Outcome:
    outcome.text, outcome.expert = answer.text, answer.expert
    return outcome


def _choice(verdict: str, n: int) -> int | None:
    """The 0-based candidate a judge's reply names: its first number in 1..n."""
    for raw in re.findall(r"\d+", verdict):
        if 1 <= int(raw) <= n:
            return int(raw) - 1
    return None
