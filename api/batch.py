"""`coe batch INPUT.jsonl -o OUTPUT.jsonl`: a file of chat requests, answered expert by expert.

Input lines are OpenAI batch requests::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "coe-auto", "messages": [{"role": "user", "content": "2+2?"}]}}

(`method` and `url` are optional; `url` must be `/v1/chat/completions` when given). Every line is
routed first, then the lines are grouped by the expert they were routed to and each group runs
with bounded concurrency while its expert is resident, so a pool with `max_resident` wakes each
expert once for the whole file instead of once per request.

Output lines are OpenAI batch results, one per input line, in input order::

    {"id": "batch_req_…", "custom_id": "q1",
     "response": {"status_code": 200, "request_id": "chatcmpl-…", "body": {…, "coe": {…}}},
     "error": null}

A malformed line gets `response: null` and `error: {"code": "invalid_line", "message":
"line 3: …"}` and does not stop the rest. Resumable: results already in the output with status
200 are kept and their lines skipped; everything else is (re)run. Results are appended as they
arrive (so an interrupted run loses nothing it finished) and the file is rewritten in input
order at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.app import create_app
from api.errors import APIError, error_body
from api.pipeline import ChatPipeline
from api.plan import Plan
from api.schemas import ChatCompletionRequest
from api.settings import Settings

__all__ = ["BatchLine", "BatchSummary", "read_input", "run_batch"]

Json = dict[str, Any]
CHAT_URL = "/v1/chat/completions"


@dataclass
class BatchLine:
    """One input line: a valid request, or the reason it is not one."""

    line_no: int
    custom_id: str | None
    request: ChatCompletionRequest | None = None
    error: str | None = None


@dataclass
class BatchSummary:
    lines: int
    skipped: int  # already answered in the output (resume)
    ok: int
    failed: int  # routed or called, and failed
    malformed: int
    by_expert: dict[str, int] = field(default_factory=dict)
    wakes: int = 0  # experts woken (or started) during the run


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"body.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


def _parse(line_no: int, text: str) -> BatchLine:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return BatchLine(line_no, None, error=f"line {line_no}: not valid JSON: {exc}")
    if not isinstance(data, dict):
        return BatchLine(line_no, None, error=f"line {line_no}: expected a JSON object")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BatchLine(line_no, None, error=f"line {line_no}: 'custom_id' (a string) is missing")
    if data.get("url", CHAT_URL) != CHAT_URL or data.get("method", "POST") != "POST":
        return BatchLine(
            line_no, custom_id, error=f"line {line_no}: only POST {CHAT_URL} is supported"
        )
    body = data.get("body")
    if not isinstance(body, dict):
        return BatchLine(line_no, custom_id, error=f"line {line_no}: 'body' (an object) is missing")
    try:
        request = ChatCompletionRequest.model_validate({**body, "stream": False})
    except ValidationError as exc:
        return BatchLine(line_no, custom_id, error=f"line {line_no}: {_validation_message(exc)}")
    return BatchLine(line_no, custom_id, request)


def read_input(path: Path) -> list[BatchLine]:
    """Every non-blank line of `path`, parsed; a repeated `custom_id` is an error on the repeat."""
    lines: list[BatchLine] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            line = _parse(line_no, text)
            if line.custom_id is not None and line.error is None:
                if line.custom_id in seen:
                    line.error = f"line {line_no}: custom_id {line.custom_id!r} is repeated"
                seen.add(line.custom_id)
            lines.append(line)
    return lines


def read_done(path: Path) -> dict[str, Json]:
    """Successful results already in the output, by `custom_id` (a torn last line is ignored)."""
    done: dict[str, Json] = {}
    if not path.exists():
        return done
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            result = json.loads(text)
        except ValueError:
            continue
        if (
            isinstance(result, dict)
            and result.get("error") is None
            and (result.get("response") or {}).get("status_code") == 200
        ):
            done[str(result.get("custom_id"))] = result
    return done


def _result(
    custom_id: str | None, status: int | None, body: Json | None, error: Json | None
) -> Json:
    response = None
    if status is not None:
        request_id = (body or {}).get("id") if status == 200 else None
        response = {"status_code": status, "request_id": request_id, "body": body}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _failure(line: BatchLine, exc: APIError) -> Json:
    body = error_body(exc.message, exc.type, exc.param, exc.code, **exc.extra)
    return _result(
        line.custom_id, exc.status_code, body, {"code": exc.type, "message": exc.message}
    )


def _write_ordered(path: Path, results: list[Json]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class _Runner:
    """Routes, groups and runs the pending lines against one live gateway app."""

    def __init__(self, chat: ChatPipeline, concurrency: int, out: Any, progress: Progress) -> None:
        self.chat = chat
        self.concurrency = concurrency
        self.out = out
        self.progress = progress
        self.results: dict[int, Json] = {}
        self.plans: dict[int, Plan] = {}  # each line's routed plan: routed once, run as grouped

    def _emit(self, line: BatchLine, result: Json) -> None:
        self.results[line.line_no] = result
        self.out.write(json.dumps(result, ensure_ascii=False) + "\n")
        self.out.flush()

    async def route(self, pending: list[BatchLine]) -> dict[str, list[BatchLine]]:
        groups: dict[str, list[BatchLine]] = defaultdict(list)
        for line in pending:
            assert line.request is not None
            try:
                plan = await self.chat.planner.plan(line.request)
            except APIError as exc:
                self._emit(line, _failure(line, exc))
                continue
            self.plans[line.line_no] = plan
            groups[plan.ranked[0]].append(line)
        # resident experts first (no wake), then the biggest groups
        board = self.chat.pool.load_board.snapshot()
        order = sorted(groups, key=lambda e: (not board[e].resident, -len(groups[e])))
        return {e: groups[e] for e in order}

    async def run_group(self, expert: str, lines: list[BatchLine]) -> None:
        task = self.progress.add_task(expert, total=len(lines))
        slots = asyncio.Semaphore(self.concurrency)

        async def one(line: BatchLine) -> None:
            assert line.request is not None
            async with slots:
                try:
                    plan = self.plans.pop(line.line_no)
                    response = await self.chat.complete(line.request, plan=plan)
                except APIError as exc:
                    self._emit(line, _failure(line, exc))
                else:
                    body = json.loads(bytes(response.body))
                    self._emit(line, _result(line.custom_id, 200, body, None))
            self.progress.advance(task)

        await asyncio.gather(*(one(line) for line in lines))


async def run_batch(
    settings: Settings,
    input_path: Path,
    output_path: Path,
    concurrency: int = 4,
    show_progress: bool = True,
    console: Console | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> BatchSummary:
    """Answer every line of `input_path` into `output_path` (see the module docstring).

    `transport` replaces the network for tests (an `httpx.MockTransport` or `FakeNetwork`).
    """
    console = console or Console(stderr=True)
    lines = read_input(input_path)
    done = read_done(output_path)
    malformed = [line for line in lines if line.error is not None]
    for line in malformed:
        console.print(f"[yellow]skipped[/] {line.error}", markup=True, highlight=False)
    pending = [
        line
        for line in lines
        if line.error is None and line.custom_id is not None and line.custom_id not in done
    ]
    kept = [done[line.custom_id] for line in lines if line.custom_id in done]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    _write_ordered(output_path, kept)  # drops failed results and a torn last line before appending

    runner: _Runner | None = None
    wakes = 0
    groups: dict[str, list[BatchLine]] = {}
    if pending:
        app = create_app(settings, transport)
        async with app.router.lifespan_context(app):
            progress = Progress(
                TextColumn("{task.description:>24}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=not show_progress,
            )
            with progress, output_path.open("a", encoding="utf-8") as out:
                runner = _Runner(app.state.chat, concurrency, out, progress)
                residency = app.state.pool.residency
                loads_at_start = sum(residency.loads.values())
                groups = await runner.route(pending)
                for expert, group in groups.items():
                    await runner.run_group(expert, group)
                wakes = sum(residency.loads.values()) - loads_at_start

    new = runner.results if runner else {}
    ordered: list[Json] = []
    for line in lines:
        if line.error is not None:
            error = {"code": "invalid_line", "message": line.error, "line": line.line_no}
            ordered.append(_result(line.custom_id, None, None, error))
        elif line.custom_id in done:
            ordered.append(done[line.custom_id])
        else:
            ordered.append(new[line.line_no])
    _write_ordered(output_path, ordered)
    failed = sum(1 for r in new.values() if r["error"] is not None)
    return BatchSummary(
        lines=len(lines),
        skipped=len(lines) - len(malformed) - len(pending),
        ok=len(new) - failed,
        failed=failed,
        malformed=len(malformed),
        by_expert={e: len(g) for e, g in groups.items()},
        wakes=wakes,
    )
