"""Training the RL router's policy: REINFORCE with a learned baseline, on a CPU, in torch.

Why REINFORCE with a baseline and not PPO: an episode is at most `max_calls + 1` steps and the
simulator (`router.rl_env.RecordedEnv`) costs microseconds, so fresh on-policy samples are
free. PPO's clipped surrogate exists to reuse expensive samples for several epochs safely; here
we simply draw a new batch of episodes every step. REINFORCE with a learned state-value baseline
(the advantage is return − V(s)) is unbiased, has no ratio-clipping or epoch hyperparameters to
tune, and with batches of hundreds of episodes its variance is small. An entropy bonus (decayed
to a tenth over training) keeps early exploration; the quality head is trained by binary
cross-entropy on the recorded scores beside it (an auxiliary loss that gives the policy a
supervised reading of each expert's chance on the query).

Each episode draws its own λ: half the time the router's `cost_weight`, else log-uniform over
`cost_weight_range`. The policy sees λ, so one training run serves (and `coe eval` sweeps) a
whole cost-quality curve, with the requested λ trained most.

Overfitting: on a small dataset (RouteLLM GSM8K: 915 training queries) the policy learns to
recognise from the embedding which training queries the cheap model gets right, which does not
carry over to new queries. `validation` > 0 holds out that share of the training queries: every
`validate_every` iterations the greedy policy's mean return on them (over λ on a log grid of the
range, plus `cost_weight`) is measured, and the parameters with the best one are returned (early
stopping; the history rows gain `validation_return`).

Deterministic given the seed: numpy draws the batches and λ, torch (seeded, one thread while
training) draws the actions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.rl_env import EpisodeState, RecordedEnv, glob_dim, step_dim
from router.rl_net import NUMPY_OPS, Ops, forward, param_shapes
from router.rl_teacher import ChainTeacher

__all__ = ["TrainConfig", "plot_learning_curve", "train_policy"]

#: Called with (iteration, numpy parameters) at each checkpoint.
Checkpoint = Callable[[int, dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 64
    iterations: int = 600
    batch_size: int = 512
    lr: float = 3e-3
    entropy: float = 0.02
    value_coef: float = 0.5
    quality_coef: float = 1.0
    cost_weight: float = 0.1
    cost_weight_range: tuple[float, float] = (0.003, 3.0)
    seed: int = 0
    checkpoint_every: int = 100
    progress: bool = True
    validation: float = 0.0
    validate_every: int = 25
    bc_iterations: int = 0


def _torch_ops() -> Ops:
    import torch

    return Ops(
        tanh=torch.tanh,
        relu=torch.relu,
        cat=lambda parts, axis: torch.cat(parts, dim=axis),
        where=lambda cond, a, fill: torch.where(cond, a, torch.full_like(a, fill)),
        broadcast_to=torch.broadcast_to,
        einsum=torch.einsum,
    )


def _init(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 2 or name.startswith("w"):
            params[name] = rng.normal(0.0, 1.0 / math.sqrt(shape[0]), shape)
        else:
            params[name] = np.zeros(shape)
    return params


def _sample_lambda(cfg: TrainConfig, rng: np.random.Generator, b: int) -> np.ndarray:
    lo, hi = cfg.cost_weight_range
    spread = np.exp(rng.uniform(math.log(lo), math.log(hi), b))
    return np.where(rng.random(b) < 0.5, cfg.cost_weight, spread)


def train_policy(
    x: np.ndarray,
    experts: np.ndarray,
    env: RecordedEnv,
    cfg: TrainConfig,
    checkpoint: Checkpoint | None = None,
    teacher: ChainTeacher | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """Train on `env`'s recorded queries; `x[i]` embeds query i, `experts` the descriptors.

    With `teacher` and `cfg.bc_iterations` > 0 the policy first imitates it (behaviour
    cloning; history rows with `phase` 0), then REINFORCE runs `cfg.iterations` (`phase` 1).
    Returns the parameters as numpy arrays and one history row per iteration (mean return,
    final score, cost in USD, calls per episode, losses).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(x, experts, env, cfg, checkpoint, torch, teacher)
    finally:
        torch.set_num_threads(threads)


def _train(
    x: np.ndarray,
    experts: np.ndarray,
    env: RecordedEnv,
    cfg: TrainConfig,
    checkpoint: Checkpoint | None,
    torch: Any,
    teacher: ChainTeacher | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ops = _torch_ops()
    k = env.n_answer_features
    hint = env.teacher is not None
    p = step_dim(k, env.prior is not None, hint)
    shapes = param_shapes(x.shape[1], experts.shape[1], glob_dim(k, hint), p, cfg.hidden)
    params = {
        n: torch.tensor(v, dtype=torch.float32, requires_grad=True)
        for n, v in _init(shapes, rng).items()
    }
    opt = _Adam(list(params.values()), cfg.lr, torch)
    xt = torch.tensor(x, dtype=torch.float32)
    et = torch.tensor(experts, dtype=torch.float32)
    scores = torch.tensor(env.scores, dtype=torch.float32)
    history: list[dict[str, float]] = []

    def export() -> dict[str, np.ndarray]:
        return {n: v.detach().numpy().astype(np.float64).copy() for n, v in params.items()}

    pool, held = _split(len(env.scores), cfg, rng)
    best: tuple[float, dict[str, np.ndarray]] | None = None
    if teacher is not None and cfg.bc_iterations > 0:
        for it in range(cfg.bc_iterations):
            loss, row = _clone(params, xt, et, scores, env, cfg, rng, ops, torch, pool, teacher)
            loss.backward()
            opt.step()
            history.append({"iteration": float(it - cfg.bc_iterations), "phase": 0.0, **row})
        if len(held):
            now = export()
            history[-1]["validation_return"] = greedy_return(now, x, experts, env, held, cfg)
            best = (history[-1]["validation_return"], now)
    bar, task = _progress(cfg)
    try:
        for it in range(cfg.iterations):
            beta = cfg.entropy * (1.0 - 0.9 * it / max(1, cfg.iterations - 1))
            loss, row = _iteration(params, xt, et, scores, env, cfg, rng, ops, torch, beta, pool)
            loss.backward()
            opt.step()
            if len(held) and ((it + 1) % cfg.validate_every == 0 or it + 1 == cfg.iterations):
                now = export()
                row["validation_return"] = greedy_return(now, x, experts, env, held, cfg)
                if best is None or row["validation_return"] > best[0]:
                    best = (row["validation_return"], now)
            history.append({"iteration": float(it), "phase": 1.0, **row})
            if bar is not None:
                bar.update(task, advance=1, description=f"rl: return {row['return']:.3f}")
            done = it + 1
            if checkpoint and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
                checkpoint(done, export())
    finally:
        if bar is not None:
            bar.stop()
    return (export() if best is None else best[1]), history


def _split(n: int, cfg: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out query indices (none held out unless `cfg.validation` > 0)."""
    if not 0.0 <= cfg.validation < 1.0:
        raise ValueError(f"validation must be in [0, 1), not {cfg.validation}")
    if cfg.validation == 0:  # draw nothing: the random stream stays as without validation
        return np.arange(n), np.zeros(0, dtype=np.int64)
    order = rng.permutation(n)
    cut = round(n * cfg.validation)
    if not 0 < cut < n:
        raise ValueError(f"validation {cfg.validation} of {n} queries leaves a split empty")
    return np.sort(order[cut:]), np.sort(order[:cut])


def greedy_return(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    experts: np.ndarray,
    env: RecordedEnv,
    rows: np.ndarray,
    cfg: TrainConfig,
) -> float:
    """Mean return of the greedy policy on queries `rows`, averaged over λ on a log grid of
    `cfg.cost_weight_range` and `cfg.cost_weight` itself."""
    lo, hi = cfg.cost_weight_range
    lambdas = [*np.geomspace(lo, hi, 7).tolist(), cfg.cost_weight]
    total = 0.0
    for lam in lambdas:
        state = env.reset(rows, lam)
        ret = np.zeros(len(rows))
        for _ in range(env.max_calls + 1):
            if state.done.all():
                break
            glob, dyn = env.observe(state)
            out = forward(params, x[rows], experts, glob, dyn, env.valid(state), NUMPY_OPS)
            state, reward = env.step(state, np.asarray(out.logits.argmax(axis=1)))
            ret += reward
        if not state.done.all():
            state, reward = env.step(state, np.full(len(rows), env.n_models))
            ret += reward
        total += float(ret.mean())
    return total / len(lambdas)


class _Adam:
    """Adam with global gradient-norm clipping at 1. Written out because `torch.optim` imports
    torch._dynamo on first use, six seconds of a CPU-minutes budget."""

    def __init__(self, params: list[Any], lr: float, torch: Any) -> None:
        self.params, self.lr, self.torch, self.t = params, lr, torch, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        torch = self.torch
        self.t += 1
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            norm = torch.sqrt(sum((g * g).sum() for g in grads))
            clip = min(1.0, 1.0 / (float(norm) + 1e-6))
            for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
                g = g * clip
                m.mul_(0.9).add_(g, alpha=0.1)
                v.mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat = m / (1 - 0.9**self.t)
                v_hat = v / (1 - 0.999**self.t)
                p.sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))
                p.grad = None


def _progress(cfg: TrainConfig) -> tuple[Any, Any]:
    if not cfg.progress:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("rl", total=cfg.iterations)


def _policy(
    params: dict[str, Any],
    xb: Any,
    et: Any,
    env: RecordedEnv,
    state: EpisodeState,
    mask: np.ndarray,
    ops: Ops,
    torch: Any,
) -> Any:
    """The policy's outputs on what the episodes in `state` observe (REINFORCE and cloning)."""
    glob, dyn = env.observe(state)
    return forward(
        params,
        xb,
        et,
        torch.tensor(glob, dtype=torch.float32),
        torch.tensor(dyn, dtype=torch.float32),
        torch.from_numpy(mask),
        ops,
    )


def _iteration(
    params: dict[str, Any],
    xt: Any,
    et: Any,
    scores: Any,
    env: RecordedEnv,
    cfg: TrainConfig,
    rng: np.random.Generator,
    ops: Ops,
    torch: Any,
    beta: float,
    pool: np.ndarray,
) -> tuple[Any, dict[str, float]]:
    """Roll out one batch of episodes on queries drawn from `pool` and build the loss."""
    rows = pool[rng.integers(0, len(pool), cfg.batch_size)]
    state = env.reset(rows, _sample_lambda(cfg, rng, cfg.batch_size))
    xb = xt[torch.from_numpy(rows)]
    logps, ents, values, rewards, actives = [], [], [], [], []
    quality = None
    for _ in range(env.max_calls + 1):
        if state.done.all():
            break
        mask = env.valid(state)
        out = _policy(params, xb, et, env, state, mask, ops, torch)
        quality = out.quality if quality is None else quality
        logp_all = torch.log_softmax(out.logits, dim=1)
        action = torch.multinomial(logp_all.exp().detach(), 1).squeeze(1)
        logps.append(logp_all.gather(1, action[:, None]).squeeze(1))
        probs = logp_all.exp()
        ents.append(-(probs * torch.where(probs > 0, logp_all, torch.zeros_like(logp_all))).sum(1))
        values.append(out.value)
        actives.append(torch.from_numpy(~state.done))
        state, reward = env.step(state, action.numpy())
        rewards.append(reward)
    if not state.done.all():  # out of steps: stop and collect the answer's score
        state, reward = env.step(state, np.full(len(rows), env.n_models))
        rewards[-1] = rewards[-1] + reward
    returns = torch.tensor(np.cumsum(np.stack(rewards)[::-1], axis=0)[::-1].copy()).float()
    logp, ent, value = torch.stack(logps), torch.stack(ents), torch.stack(values)
    active = torch.stack(actives).float()
    count = active.sum().clamp(min=1.0)
    advantage = (returns - value).detach()
    loss_pi = -(logp * advantage * active).sum() / count
    loss_v = (((value - returns) ** 2) * active).sum() / count
    loss_ent = (ent * active).sum() / count
    assert quality is not None
    loss_q = torch.nn.functional.binary_cross_entropy_with_logits(quality, scores[rows])
    loss = loss_pi + cfg.value_coef * loss_v - beta * loss_ent + cfg.quality_coef * loss_q
    final = env.final_scores(state)
    return loss, {
        "return": float(returns[0].mean()),
        "score": float(final.mean()),
        "cost_usd": float(state.spent.mean()),
        "calls": float(state.n_calls.mean()),
        "loss_value": float(loss_v.detach()),
        "loss_quality": float(loss_q.detach()),
        "entropy": float(loss_ent.detach()),
    }


def _clone(
    params: dict[str, Any],
    xt: Any,
    et: Any,
    scores: Any,
    env: RecordedEnv,
    cfg: TrainConfig,
    rng: np.random.Generator,
    ops: Ops,
    torch: Any,
    pool: np.ndarray,
    teacher: ChainTeacher,
) -> tuple[Any, dict[str, float]]:
    """One behaviour-cloning step: episodes run by the teacher's chains, the loss the policy's
    cross-entropy on the teacher's actions (plus the value and quality losses, so the
    baseline starts at the teacher's returns)."""
    rows = pool[rng.integers(0, len(pool), cfg.batch_size)]
    lam = _sample_lambda(cfg, rng, cfg.batch_size)
    chain = teacher.pick(lam)
    state = env.reset(rows, lam)
    xb = xt[torch.from_numpy(rows)]
    nlls, values, rewards, actives = [], [], [], []
    quality = None
    for _ in range(env.max_calls + 1):
        if state.done.all():
            break
        mask = env.valid(state)
        action = teacher.actions(state, chain)
        stop = env.n_models
        action = np.where(mask[np.arange(len(rows)), action], action, stop)
        out = _policy(params, xb, et, env, state, mask, ops, torch)
        quality = out.quality if quality is None else quality
        logp_all = torch.log_softmax(out.logits, dim=1)
        nlls.append(-logp_all.gather(1, torch.from_numpy(action)[:, None]).squeeze(1))
        values.append(out.value)
        actives.append(torch.from_numpy(~state.done))
        state, reward = env.step(state, action)
        rewards.append(reward)
    if not state.done.all():
        state, reward = env.step(state, np.full(len(rows), env.n_models))
        rewards[-1] = rewards[-1] + reward
    returns = torch.tensor(np.cumsum(np.stack(rewards)[::-1], axis=0)[::-1].copy()).float()
    active = torch.stack(actives).float()
    count = active.sum().clamp(min=1.0)
    value = torch.stack(values)
    loss_bc = (torch.stack(nlls) * active).sum() / count
    loss_v = (((value - returns) ** 2) * active).sum() / count
    assert quality is not None
    loss_q = torch.nn.functional.binary_cross_entropy_with_logits(quality, scores[rows])
    loss = loss_bc + cfg.value_coef * loss_v + cfg.quality_coef * loss_q
    return loss, {
        "return": float(returns[0].mean()),
        "score": float(env.final_scores(state).mean()),
        "cost_usd": float(state.spent.mean()),
        "calls": float(state.n_calls.mean()),
        "loss_value": float(loss_v.detach()),
        "loss_quality": float(loss_q.detach()),
        "loss_bc": float(loss_bc.detach()),
    }


def plot_learning_curve(history: list[dict[str, float]], path: Path) -> Path:
    """Return, final score, cost and calls per episode over training iterations, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [h["iteration"] for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = (
        ("return", "return (score − λ·cost/scale)"),
        ("score", "final answer's score"),
        ("cost_usd", "cost per episode, USD"),
        ("calls", "calls per episode"),
    )
    held = [(h["iteration"], h["validation_return"]) for h in history if "validation_return" in h]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        ys = np.asarray([h[key] for h in history])
        ax.plot(its, ys, linewidth=0.6, alpha=0.4)
        window = max(1, len(ys) // 30)
        smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
        ax.plot(its[window - 1 :], smooth, linewidth=1.5)
        if key == "return" and held:  # the greedy return on the policy's held-out share
            ax.plot(*zip(*held, strict=True), marker="o", markersize=3, label="held out, greedy")
            ax.legend(fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("iteration")
    fig.suptitle("RL router training (λ drawn per episode; REINFORCE + learned baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
