"""The RL router's policy network, written once for numpy (serving) and torch (training).

The network scores each candidate expert from the query and the expert's *descriptor* (prices,
size, an embedding of its free-text description), never from its name, so an expert that was
not in the training data can be scored from its descriptor alone. Per step it outputs:

- `logits` `(b, m + 1)`: call expert j, or stop (last column); invalid actions at −1e9;
- `value` `(b,)`: the expected return from here (REINFORCE's learned baseline);
- `quality` logits `(b, m)`: the predicted score of each expert on the query, trained
  supervised beside the policy (an auxiliary loss); `RLRouter.score` returns its sigmoid, and the
  policy reads it as an input.

Shapes: `x` `(b, d)` query embeddings, `experts` `(m, f)` descriptor features, `glob`
`(b, g)` and `dyn` `(b, m, p)` from `router.rl_env.observe`, `mask` `(b, m + 1)` bool.

    q = tanh(x·Wq)              e_j = tanh(E_j·We)
    u_j = relu([q⊙e_j, q, e_j]·Wu)            quality_j = u_j·wu
    z_j = relu([u_j, dyn_j, quality_j, glob]·W1)   logit_call_j = z_j·w_call
    s = relu([q, glob, z_current]·Ws)       logit_stop = s·w_stop      value = s·w_v
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "HEAD_PARAMS",
    "NUMPY_OPS",
    "NetOutput",
    "Ops",
    "forward",
    "param_shapes",
    "quality_logits",
    "softmax",
]

#: The last-layer parameters online feedback updates (see `router.rl.RLRouter.learn`).
HEAD_PARAMS = ("w_call", "c_call", "w_stop", "c_stop", "w_v", "c_v", "wu", "cu")


@dataclass(frozen=True)
class Ops:
    """The few array functions the forward pass needs, for one array library."""

    tanh: Callable[[Any], Any]
    relu: Callable[[Any], Any]
    cat: Callable[[list[Any], int], Any]
    where: Callable[[Any, Any, float], Any]
    broadcast_to: Callable[[Any, tuple[int, ...]], Any]
    einsum: Callable[..., Any]


NUMPY_OPS = Ops(
    tanh=np.tanh,
    relu=lambda a: np.maximum(a, 0.0),
    cat=lambda parts, axis: np.concatenate(parts, axis=axis),
    where=lambda cond, a, fill: np.where(cond, a, fill),
    broadcast_to=np.broadcast_to,
    einsum=np.einsum,
)


def param_shapes(d: int, f: int, g: int, p: int, h: int) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape for query dim `d`, descriptor dim `f`, observation widths
    `g` (per episode) and `p` (per expert), hidden width `h`."""
    return {
        "Wq": (d, h),
        "bq": (h,),
        "We": (f, h),
        "be": (h,),
        "Wu": (3 * h, h),
        "bu": (h,),
        "wu": (h,),
        "cu": (),
        "W1": (h + p + 1 + g, h),
        "b1": (h,),
        "w_call": (h,),
        "c_call": (),
        "Ws": (2 * h + g, h),
        "bs": (h,),
        "w_stop": (h,),
        "c_stop": (),
        "w_v": (h,),
        "c_v": (),
    }


@dataclass(frozen=True)
class NetOutput:
    """One forward pass; `z` and `s` are the last hidden layers (online learning needs them)."""

    logits: Any
    value: Any
    quality: Any
    z: Any
    s: Any


def quality_logits(p: Mapping[str, Any], x: Any, experts: Any, ops: Ops) -> tuple[Any, Any]:
    """`(quality (b, m), u (b, m, h))`: the supervised head alone (what `score` needs)."""
    q = ops.tanh(x @ p["Wq"] + p["bq"])
    e = ops.tanh(experts @ p["We"] + p["be"])
    b, h = q.shape
    m = e.shape[0]
    qb = ops.broadcast_to(q[:, None, :], (b, m, h))
    eb = ops.broadcast_to(e[None, :, :], (b, m, h))
    u = ops.relu(ops.cat([qb * eb, qb, eb], 2) @ p["Wu"] + p["bu"])
    return u @ p["wu"] + p["cu"], u


def forward(
    p: Mapping[str, Any],
    x: Any,
    experts: Any,
    glob: Any,
    dyn: Any,
    mask: Any,
    ops: Ops = NUMPY_OPS,
) -> NetOutput:
    """The policy, value and quality heads for one step of `b` episodes."""
    quality, u = quality_logits(p, x, experts, ops)
    q = ops.tanh(x @ p["Wq"] + p["bq"])
    b, m, _ = u.shape
    gb = ops.broadcast_to(glob[:, None, :], (b, m, glob.shape[1]))
    z = ops.relu(ops.cat([u, dyn, quality[..., None], gb], 2) @ p["W1"] + p["b1"])
    current = dyn[..., 2]  # 1 where expert j gave the current answer (see rl_env.observe)
    z_current = ops.einsum("bm,bmh->bh", current, z)
    s = ops.relu(ops.cat([q, glob, z_current], 1) @ p["Ws"] + p["bs"])
    call = z @ p["w_call"] + p["c_call"]
    stop = s @ p["w_stop"] + p["c_stop"]
    logits = ops.where(mask, ops.cat([call, stop[:, None]], 1), -1e9)
    return NetOutput(logits=logits, value=s @ p["w_v"] + p["c_v"], quality=quality, z=z, s=s)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in numpy (masked entries at −1e9 get probability 0)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))
