"""Classifier-free guidance: the combine and the doubled-batch evaluation, on numpy and torch alike.

One home for guidance (`docs/architecture.md`, "One home for the maths"): the service's pipeline,
the distillation teacher target, evaluation's guided denoiser and the GPU bench all evaluate a
guided teacher the same way, as one doubled batch (the conditional rows, then the null or
negative rows) through any network call `call(z, t, states, mask)`, split in halves and combined
as x_hat^w = x_null + w (x_cond - x_null) (Ho and Salimans 2022, in x-space).

Written with array operators; the torch branches take torch from `sys.modules` (it is loaded
whenever torch tensors arrive), so the core never imports torch and runs without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Call = Callable[[Any, Any, Any, Any], Any]


def guidance_combine(x_cond: Any, x_null: Any, w: Any) -> Any:
    """Classifier-free guidance in x-space: x_hat^w = x_hat(z, null) + w (x_hat(z, c) - x_hat(z, null)).

    w = 1 returns the conditional prediction exactly (no rounding through the difference).
    `w` is a float or an array broadcastable to x (per-image guidance: shape (B, 1, 1, 1)).
    """
    if np.ndim(w) == 0 and float(w) == 1.0:
        return x_cond
    return x_null + w * (x_cond - x_null)


def per_image_w(w: Any, like: Any) -> Any:
    """`w` shaped to broadcast over images like `like`: a scalar stays a scalar, a (B,) vector
    becomes (B, 1, 1, 1) of the array type of `like` (a numpy w on torch goes to float32 on its device)."""
    if np.ndim(w) == 0:
        return w
    if isinstance(like, np.ndarray):
        return np.asarray(w).reshape(-1, 1, 1, 1)
    if not isinstance(w, np.ndarray) and hasattr(w, "view"):  # already a torch tensor
        return w.view(-1, 1, 1, 1)
    return _torch().as_tensor(np.asarray(w, np.float32), device=like.device).view(-1, 1, 1, 1)


def _torch() -> Any:
    """The torch module, only ever reached with torch tensors in hand, so it is already imported:
    taken from `sys.modules` rather than imported, the core never imports torch itself."""
    return sys.modules["torch"]


def _cat(a: Any, b: Any) -> Any:
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    return _torch().cat([a, b])


def _copy(x: Any) -> Any:
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


def doubled_guidance(
    call: Call,
    z: Any,
    t: Any,
    text: tuple[Any, Any],
    null: tuple[Any, Any],
    w: Any,
    rows: Any = None,
) -> Any:
    """x_hat^w from one evaluation of `call` over the doubled batch (conditional rows, then null rows).

    `text` and `null` are (states, mask) of the prompts and of the null/negative prompts, one row
    per image. `w` is a float or a per-image vector. With `rows` (indices) only those images get a
    null row and the combine; the others return their conditional prediction untouched, exactly
    as they would alone (the service guides only rows with w != 1, so rows never depend on their
    neighbours).
    """
    states, mask = text
    null_states, null_mask = null
    n = z.shape[0]
    if rows is None:
        x = call(_cat(z, z), _cat(t, t), _cat(states, null_states), _cat(mask, null_mask))
        x_cond, x_null = x[:n], x[n:]
        return guidance_combine(x_cond, x_null, per_image_w(w, x_cond))
    x = call(_cat(z, z[rows]), _cat(t, t[rows]), _cat(states, null_states[rows]), _cat(mask, null_mask[rows]))
    x_cond, x_null = x[:n], x[n:]
    x_hat = _copy(x_cond)
    x_hat[rows] = guidance_combine(x_cond[rows], x_null, per_image_w(w[rows], x_cond))
    return x_hat


def evaluations_per_image_step(network_input: bool, w: Any = None) -> int:
    """Network evaluations per image per sampler step: 1 for a network that takes w as an input (a
    distilled student) or at w = 1, else 2 (the conditional and null rows of one doubled batch).
    With `w` None, the model's cost at a guided w. The one count of it for the service's cost
    model and the offline side's evaluation rows."""
    if network_input:
        return 1
    return 1 if w is not None and np.ndim(w) == 0 and float(w) == 1.0 else 2


def guided_call(
    call: Callable[..., Any],
    z: Any,
    t: Any,
    text: tuple[Any, Any],
    null: tuple[Any, Any] | None,
    w: Any,
    network_input: bool,
) -> Any:
    """x_hat^w for any network, the one dispatch the service's pipeline and the offline side's
    guided denoiser share: a network with a guidance input takes w (one evaluation, `w` given in
    the form the network takes); a teacher evaluates the doubled batch (`doubled_guidance`) for the
    rows with w != 1 and the plain conditional prediction for the rest (all rows, for a scalar w),
    so a w = 1 row is exactly what it would be alone. `null` None means no row is guided."""
    states, mask = text
    if network_input:
        return call(z, t, states, mask, w)
    if null is None:
        return call(z, t, states, mask)
    if np.ndim(w) == 0:
        return call(z, t, states, mask) if float(w) == 1.0 else doubled_guidance(call, z, t, text, null, w)
    rows = np.flatnonzero(np.asarray(w) != 1.0)
    if rows.size == 0:
        return call(z, t, states, mask)
    if rows.size == len(w):
        return doubled_guidance(call, z, t, text, null, w)
    return doubled_guidance(call, z, t, text, null, w, rows=rows)
