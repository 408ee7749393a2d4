"""One attention entry point for every network, behind a kernel registry.

``dot_product_attention(q, k, v, kv_mask=..., kernel=name)`` with q [B, Sq, H, D], k/v [B, Sk, H, D]
and an optional key-validity mask [B, Sk] (True = attend). Kernels register themselves by name;
asking for one that is not registered, or not usable on the current backend, is an error that names
the kernels that are.

Kernels: ``xla`` (reference, materialises the logits), ``chunked`` (query/key blocks with an online
softmax in plain XLA, memory linear in tokens; the CPU default), ``splash`` (the Pallas TPU
splash-attention kernel; interpreted on the CPU), ``cudnn`` (cuDNN flash attention on GPUs).
``sharded_attention`` (``ulysses.py``) runs any of them on a device mesh (Ulysses sequence
parallelism for self-attention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp

__all__ = [
    "dot_product_attention",
    "register_kernel",
    "available_kernels",
    "default_kernel",
    "resolve_kernel",
    "KERNELS",
    "sharded_attention",
    "target_platform",
]


class AttentionKernel(Protocol):
    def __call__(
        self, q: jax.Array, k: jax.Array, v: jax.Array, *, kv_mask: jax.Array | None, scale: float
    ) -> jax.Array: ...


# name -> (kernel function, predicate telling whether it runs on the current default backend)
KERNELS: dict[str, tuple[AttentionKernel, Callable[[], bool]]] = {}


def register_kernel(name: str, *, available: Callable[[], bool] = lambda: True):
    def wrap(fn: AttentionKernel) -> AttentionKernel:
        KERNELS[name] = (fn, available)
        return fn

    return wrap


def target_platform() -> str:
    """The platform the program is being built for: that of the active mesh's devices (which may be
    compile-only TPU devices from ``jax.experimental.topologies`` on a CPU host), else the default
    backend."""
    from stepvideo_jax.sharding import current_mesh

    mesh = current_mesh()  # the mesh alone: this runs outside a network's rules too (VAE convs)
    if mesh is not None:
        return mesh.devices.flat[0].platform
    return jax.default_backend()


def available_kernels() -> list[str]:
    return sorted(name for name, (_, ok) in KERNELS.items() if ok())


def default_kernel() -> str:
    """The kernel to use when the config does not say: splash on TPU, cudnn on GPU, chunked elsewhere
    (for the platform being compiled for: ``target_platform()``)."""
    return {"tpu": "splash", "gpu": "cudnn"}.get(target_platform(), "chunked")


def resolve_kernel(kernel: str) -> str:
    """ "auto" -> the backend's default kernel (`default_kernel()`); any other name unchanged."""
    return default_kernel() if kernel == "auto" else kernel


def check_kernel(kernel: str) -> None:
    kernel = resolve_kernel(kernel)
    if kernel not in KERNELS or not KERNELS[kernel][1]():
        raise ValueError(
            f"attention kernel {kernel!r} is not available on backend {target_platform()!r}; "
            f"available kernels: {', '.join(available_kernels())}"
        )


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    kv_mask: jax.Array | None = None,
    kernel: str = "xla",
    scale: float | None = None,
) -> jax.Array:
    """Softmax attention. q [B, Sq, H, D], k/v [B, Sk, H, D], kv_mask [B, Sk] bool -> [B, Sq, H, D].
    `kernel="auto"` picks the backend's default (splash on TPU, cudnn on GPU, chunked on CPU)."""
    kernel = resolve_kernel(kernel)
    check_kernel(kernel)
    if q.ndim != 4 or k.shape != v.shape[:3] + (k.shape[-1],) or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"attention expects q [B, Sq, H, D] and k, v [B, Sk, H, D]; got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    if kv_mask is not None and tuple(kv_mask.shape) != (k.shape[0], k.shape[1]):
        raise ValueError(f"kv_mask must be [B, Sk] = {(k.shape[0], k.shape[1])}; got {tuple(kv_mask.shape)}")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    return KERNELS[kernel][0](q, k, v, kv_mask=kv_mask, scale=scale)


@register_kernel("xla")
def _xla_attention(q, k, v, *, kv_mask, scale):
    """Reference: materialises the [B, H, Sq, Sk] logits; softmax in float32."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=jax.lax.Precision.HIGHEST).astype(jnp.float32)
    logits = logits * scale
    if kv_mask is not None:
        logits = jnp.where(kv_mask[:, None, None, :], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=jax.lax.Precision.HIGHEST)


# Registration side effects of the other kernels (imported after the registry exists).
from stepvideo_jax.attention import chunked as _chunked  # noqa: E402,F401
from stepvideo_jax.attention import cudnn as _cudnn  # noqa: E402,F401
from stepvideo_jax.attention import splash as _splash  # noqa: E402,F401
from stepvideo_jax.attention.ulysses import sharded_attention  # noqa: E402
