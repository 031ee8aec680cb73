"""coe-compose end to end over fake experts whose answers each test enqueues."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from tests.api.test_chat import sse_events
from tests.conftest import Gateway, write_pool

QUESTION = [{"role": "user", "content": "What is 6 * 7?"}]
NAMES = ("alpha", "beta", "gamma")


def expert(name: str, price: float) -> dict[str, Any]:
    return {
        "name": name,
        "engine": "openai",
        "base_url": f"http://{name}/v1",
        "input_price": price,
        "output_price": 2 * price,
        "max_concurrency": 4,
    }


async def start(tmp_path: Path, compose: dict[str, Any] | None = None, **settings: Any) -> Any:
    pool: dict[str, Any] = {"experts": [expert(n, i + 1.0) for i, n in enumerate(NAMES)]}
    if compose:
        pool["compose"] = compose
    fakes = {n: FakeExpert(n, default=f"{n} default") for n in NAMES}
    network = FakeNetwork(fakes)
    app = create_app(
        Settings(
            pool=write_pool(tmp_path / "pool.yaml", pool),
            work_dir=tmp_path / "work",
            _env_file=None,  # type: ignore[call-arg]
            **settings,
        ),
        transport=network,
    )
    return app, fakes, network


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[Gateway]:
    app, fakes, network = await start(tmp_path, {"aggregator": "gamma"})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(app, client, fakes, network)


async def compose(gw: Gateway, **coe: Any) -> httpx.Response:
    body = {"model": "coe-compose", "messages": QUESTION, "coe": coe}
    return await gw.client.post("/v1/chat/completions", json=body)


async def test_aggregate_sends_every_answer_to_the_aggregator(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("It is 42.")
    trio.fakes["beta"].enqueue("6 * 7 = 43")
    trio.fakes["gamma"].enqueue("I think 42", "The answer is 42.")
    r = await compose(trio, strategy="aggregate", k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "The answer is 42."
    assert body["model"] == "gamma"
    meta = body["coe"]["compose"]
    assert meta["strategy"] == "aggregate" and meta["answered_by"] == "gamma"
    roles = [(a["expert"], a["role"]) for a in meta["answers"]]
    assert roles == [
        ("alpha", "proposer"),
        ("beta", "proposer"),
        ("gamma", "proposer"),
        ("gamma", "aggregator"),
    ]
    prompt = trio.fakes["gamma"].requests[-1]["messages"]
    assert prompt[0]["role"] == "system"
    for answer in ("It is 42.", "6 * 7 = 43", "I think 42"):
        assert answer in prompt[0]["content"]
    assert "alpha" not in prompt[0]["content"]  # candidates are numbered, never named
    assert prompt[1:] == QUESTION
    # the cost is the sum of every call (prices 1, 2, 3 USD per 1M input tokens, twice output)
    assert body["coe"]["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in meta["answers"]))
    assert body["coe"]["experts"] == ["alpha", "beta", "gamma"]
    assert body["usage"]["prompt_tokens"] == sum(a["prompt_tokens"] for a in meta["answers"])


async def test_moa_runs_layers_where_proposers_see_the_last_layer(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("41", "42 after all")
    trio.fakes["beta"].enqueue("42", "42")
    trio.fakes["gamma"].enqueue("final: 42")
    r = await compose(trio, strategy="moa", k=2, layers=2)
    meta = r.json()["coe"]["compose"]
    assert [(a["expert"], a["layer"]) for a in meta["answers"]] == [
        ("alpha", 1),
        ("beta", 1),
        ("alpha", 2),
        ("beta", 2),
        ("gamma", 3),
    ]
    layer_two = trio.fakes["alpha"].requests[1]["messages"][0]["content"]
    assert "[1] 41" in layer_two and "[2] 42" in layer_two
    aggregated = trio.fakes["gamma"].requests[0]["messages"][0]["content"]
    assert "42 after all" in aggregated
    assert r.json()["choices"][0]["message"]["content"] == "final: 42"


async def test_select_stops_early_when_the_answers_agree(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("6*7 = 42")
    trio.fakes["beta"].enqueue("The answer is 42.")
    r = await compose(trio, strategy="select", k=2)
    meta = r.json()["coe"]["compose"]
    assert meta["early_stopped"] is True
    assert [a["role"] for a in meta["answers"]] == ["proposer", "proposer"]
    assert trio.fakes["gamma"].requests == []  # no judge call
    assert r.json()["choices"][0]["message"]["content"] == "6*7 = 42"


async def test_select_asks_the_judge_when_answers_differ(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("It is 41")
    trio.fakes["beta"].enqueue("It is 42")
    trio.fakes["gamma"].enqueue("Candidate 2 is right.")
    r = await compose(trio, strategy="select", k=2)
    meta = r.json()["coe"]["compose"]
    assert meta["early_stopped"] is False
    assert meta["answers"][-1]["role"] == "judge"
    assert r.json()["choices"][0]["message"]["content"] == "It is 42"
    assert meta["answered_by"] == "beta"
    judged = trio.fakes["gamma"].requests[0]["messages"][0]["content"]
    assert "What is 6 * 7?" in judged and "[1] It is 41" in judged and "1 to 2" in judged


async def test_select_falls_back_to_a_vote_on_a_useless_verdict(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("41")
    trio.fakes["beta"].enqueue("42")
    trio.fakes["gamma"].enqueue("42", "no idea")
    r = await compose(trio, strategy="select", k=3)
    meta = r.json()["coe"]["compose"]
    assert any("fell back to a vote" in n for n in meta["notes"])
    assert r.json()["choices"][0]["message"]["content"] == "42"


async def test_vote_takes_the_majority_of_normalised_answers(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("The result is 41.")
    trio.fakes["beta"].enqueue("So 6*7 = 42.")
    trio.fakes["gamma"].enqueue("#### 42")
    r = await compose(trio, strategy="vote", k=3)
    meta = r.json()["coe"]["compose"]
    assert meta["votes"] == {"41": 1, "42": 2}
    assert r.json()["choices"][0]["message"]["content"] == "So 6*7 = 42."
    assert meta["answered_by"] == "beta"


async def test_vote_reads_option_letters_of_multiple_choice(trio: Gateway) -> None:
    question = "Which is a prime? (A) 4 (B) 6 (C) 7 (D) 9"
    for name, reply in zip(NAMES, ("Answer: C", "(B)", "The answer is (C) 7"), strict=True):
        trio.fakes[name].enqueue(reply)
    body = {
        "model": "coe-compose",
        "messages": [{"role": "user", "content": question}],
        "coe": {"strategy": "vote"},
    }
    r = await trio.client.post("/v1/chat/completions", json=body)
    assert r.json()["coe"]["compose"]["votes"] == {"C": 2, "B": 1}


async def test_a_failing_expert_is_left_out_and_reported(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("42")
    trio.network.down.add("beta")
    trio.fakes["gamma"].enqueue("42", "aggregated 42")
    r = await compose(trio, strategy="aggregate", k=3)
    assert r.status_code == 200
    coe = r.json()["coe"]
    assert coe["compose"]["failed"][0]["expert"] == "beta"
    assert "connection refused" in coe["compose"]["failed"][0]["error"]
    assert {"expert": "beta", "error": coe["compose"]["failed"][0]["error"]} in coe["tried"]
    assert coe["experts"] == ["alpha", "gamma"]
    assert r.json()["choices"][0]["message"]["content"] == "aggregated 42"


async def test_all_failing_is_an_error_naming_each(trio: Gateway) -> None:
    trio.network.down.update(NAMES)
    r = await compose(trio, strategy="aggregate", k=3)
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "no_expert_available"
    assert [t["expert"] for t in error["tried"]] == list(NAMES)
    for name in NAMES:
        assert name in error["message"]


async def test_all_timing_out_is_a_504(trio: Gateway) -> None:
    trio.network.silent.update(NAMES)
    r = await compose(trio, strategy="vote", k=2)
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"


async def test_a_failing_aggregator_falls_back_to_the_best_answer(trio: Gateway) -> None:
    trio.fakes["alpha"].enqueue("41 from alpha")
    trio.fakes["beta"].enqueue("42 from beta")
    trio.fakes["gamma"].enqueue("gamma's 42")
    trio.fakes["gamma"].enqueue_error(500, "aggregator crashed")
    r = await compose(trio, strategy="aggregate", k=3)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "41 from alpha"
    meta = body["coe"]["compose"]
    assert meta["failed"] == [{"expert": "gamma", "error": "HTTP 500: aggregator crashed"}]
    assert any("aggregator gamma failed" in n for n in meta["notes"])


async def test_max_cost_recruits_only_what_fits(trio: Gateway) -> None:
    # Bounded per call at 512 completion tokens: alpha ~0.001 USD, beta ~0.002, gamma ~0.003,
    # and the aggregator's call over the answers is counted too: only alpha fits 0.0015.
    r = await compose(trio, strategy="aggregate", k=3, max_cost_usd=0.0015)
    assert r.status_code == 200
    meta = r.json()["coe"]["compose"]
    assert [a["expert"] for a in meta["answers"]] == ["alpha"]
    assert "nothing to aggregate" in meta["notes"][0]
    r = await compose(trio, strategy="aggregate", k=3, max_cost_usd=1e-9)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "coe.max_cost_usd"


async def test_moa_stops_adding_layers_at_the_cost_cap(trio: Gateway) -> None:
    for fake in trio.fakes.values():
        fake.default = " ".join(["42"] * 80)  # 80 tokens an answer: the cost adds up
    cap = 0.005
    body = {
        "model": "coe-compose",
        "messages": QUESTION,
        "max_tokens": 100,
        "coe": {"strategy": "moa", "k": 2, "layers": 5, "max_cost_usd": cap},
    }
    r = await trio.client.post("/v1/chat/completions", json=body)
    meta = r.json()["coe"]["compose"]
    layers = [a["layer"] for a in meta["answers"] if a["role"] == "proposer"]
    assert layers == [1, 1, 2, 2, 3, 3]  # a fourth layer and the aggregator would pass the cap
    assert meta["answers"][-1]["role"] == "aggregator"
    assert "stopped before layer 4" in meta["notes"][0]
    assert r.json()["coe"]["cost_usd"] <= cap


async def test_streaming_passes_the_aggregator_through_with_meta_at_the_end(
    trio: Gateway,
) -> None:
    trio.fakes["alpha"].enqueue("41")
    trio.fakes["beta"].enqueue("42")
    trio.fakes["gamma"].enqueue("42", "the answer is 42 indeed")
    body = {
        "model": "coe-compose",
        "messages": QUESTION,
        "stream": True,
        "stream_options": {"include_usage": True},
        "coe": {"strategy": "aggregate"},
    }
    r = await trio.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "the answer is 42 indeed"
    assert len(chunks) >= 5  # piece by piece, as the aggregator wrote it
    final = events[-2]
    assert final["choices"] == []
    meta = final["coe"]
    assert meta["compose"]["answers"][-1]["role"] == "aggregator"
    assert meta["compose"]["answers"][-1]["content"] == text
    assert final["usage"]["completion_tokens"] == meta["usage"]["completion_tokens"]
    assert meta["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in meta["compose"]["answers"]))
    log = await trio.app.state.store.requests()
    assert log[-1].cost_usd == pytest.approx(meta["cost_usd"])
    assert log[-1].experts == ["alpha", "beta", "gamma"]


async def test_streaming_a_vote_sends_the_chosen_answer(trio: Gateway) -> None:
    for name in NAMES:
        trio.fakes[name].enqueue("42")
    body = {"model": "coe-compose", "messages": QUESTION, "stream": True}
    r = await trio.client.post("/v1/chat/completions", json=body | {"coe": {"strategy": "vote"}})
    events = sse_events(r.text)
    assert events[0]["choices"][0]["delta"]["content"] == "42"
    assert events[-2]["coe"]["compose"]["votes"] == {"42": 3}


async def test_stream_errors_before_the_first_byte_are_openai_errors(trio: Gateway) -> None:
    trio.network.down.update(NAMES)
    body = {"model": "coe-compose", "messages": QUESTION, "stream": True}
    r = await trio.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 503
    assert "alpha" in r.json()["error"]["message"]


async def test_defaults_come_from_settings(tmp_path: Path) -> None:
    app, _, _ = await start(tmp_path, compose_strategy="vote", compose_k=2)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = {"model": "coe-compose", "messages": QUESTION}
            r = await client.post("/v1/chat/completions", json=body)
    meta = r.json()["coe"]["compose"]
    assert meta["strategy"] == "vote"
    assert len(meta["answers"]) == 2


async def test_aggregator_by_profile_and_templates_from_the_pool_file(tmp_path: Path) -> None:
    (tmp_path / "agg.json").write_text(json.dumps({"aggregation": {"alpha": 0.2, "beta": 0.9}}))
    compose_config = {
        "aggregation_profile": "agg.json",
        "templates": {"aggregate": "MERGE THESE:\n{answers}"},
    }
    app, fakes, _ = await start(tmp_path, compose_config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            body = {"model": "coe-compose", "messages": QUESTION, "coe": {"k": 2}}
            r = await client.post("/v1/chat/completions", json=body)
    assert r.json()["coe"]["compose"]["answers"][-1]["expert"] == "beta"
    assert fakes["beta"].requests[-1]["messages"][0]["content"].startswith("MERGE THESE:\n[1]")


@pytest.mark.parametrize(
    ("compose_config", "message"),
    [
        ({"aggregator": "nobody"}, "compose.aggregator 'nobody' is not an expert"),
        ({"templates": {"select": "pick one"}}, "lacks placeholder(s) {answers}, {n}"),
        ({"templates": {"judge": "{answers}"}}, "unknown template 'judge'"),
        ({"aggregation_profile": "missing.json"}, "compose.aggregation_profile: no such file"),
    ],
)
def test_bad_compose_config_fails_at_load_naming_the_field(
    tmp_path: Path, compose_config: dict[str, Any], message: str
) -> None:
    from experts.errors import PoolConfigError
    from experts.pool import load_pool

    pool = {"experts": [expert("alpha", 1.0)], "compose": compose_config}
    with pytest.raises(PoolConfigError, match="compose") as info:
        load_pool(write_pool(tmp_path / "pool.yaml", pool))
    assert message in str(info.value)


async def test_route_explains_a_composition_without_calling_experts(trio: Gateway) -> None:
    r = await trio.client.post("/v1/route", json={"model": "coe-compose", "messages": QUESTION})
    assert r.json()["ranked"] == ["alpha", "beta", "gamma"]
    assert all(f.requests == [] for f in trio.fakes.values())


async def test_bad_strategy_is_a_400(trio: Gateway) -> None:
    r = await compose(trio, strategy="telepathy")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "coe.strategy"


async def test_a_client_leaving_a_composed_stream_frees_the_aggregator(trio: Gateway) -> None:
    from api.schemas import ChatCompletionRequest

    trio.fakes["gamma"].enqueue("a b c d e f g h")
    chat = trio.app.state.chat
    request = ChatCompletionRequest.model_validate(
        {"model": "coe-compose", "messages": QUESTION, "stream": True, "coe": {"k": 2}}
    )
    response = await chat.stream(request)
    assert chat.pool.client.in_flight("gamma") == 1  # the aggregator's stream is open
    body = response.body_iterator
    assert b"chat.completion.chunk" in bytes(await anext(body))
    await body.aclose()  # what Starlette does when the client goes away
    assert chat.pool.client.in_flight("gamma") == 0
    assert (await trio.app.state.store.requests())[-1].status == 499
