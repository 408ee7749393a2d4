"""An independent float64 NumPy forward of the released Step-LLM, written from ../shared/REFERENCE.md
and the release's `stepllm.py` semantics (fused wqkv, tile + index-select GQA expansion, fused
SwiGLU w1, causal sqrt-ALiBi attention, no final norm).

It reads weights under the release's key names, so a model that matches it on random weights of any
head count matches the release's math; the PyTorch fixture pins it to the real thing.
"""

from __future__ import annotations

import math

import numpy as np


def slopes_reference(h: int) -> np.ndarray:
    """ALiBi slopes, the "closest power of two, then every other slope of twice as many" way."""

    def power_of_two(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(h).is_integer():
        return np.asarray(power_of_two(h))
    closest = 2 ** math.floor(math.log2(h))
    return np.asarray(power_of_two(closest) + power_of_two(2 * closest)[0::2][: h - closest])


def _rms(x, w, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def step_llm_forward(weights: dict, cfg: dict, input_ids: np.ndarray) -> np.ndarray:
    """weights: release keys -> arrays; cfg: release config.json fields; input_ids [B, L] -> [B, L, D]."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    d, h, g = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_attention_groups"]
    hd, eps, rep = d // h, cfg["layernorm_epsilon"], h // g
    x = w["tok_embeddings.word_embeddings.weight"][input_ids]  # [B, L, D]
    b, n, _ = x.shape
    dist = np.arange(n)[:, None] - np.arange(n)[None, :]
    slopes = slopes_reference(h)
    bias = -slopes[:, None, None] * np.sqrt(np.maximum(dist, 0))[None]
    bias = np.where(dist[None] >= 0, bias, -np.inf)  # [H, L, L]
    for i in range(cfg["num_layers"]):
        p = f"transformer.layers.{i}."
        y = _rms(x, w[p + "attention_norm.weight"], eps)
        qkv = y @ w[p + "attention.wqkv.weight"].T
        q = qkv[..., :d].reshape(b, n, h, hd)
        kv = qkv[..., d:].reshape(b, n, g, 2 * hd)
        k, v = kv[..., :hd], kv[..., hd:]
        # The release's expansion: tile the groups, then pick [g0 x rep, g1 x rep, ...].
        idx = np.arange(rep * g).reshape(rep, g).T.reshape(-1)
        k = np.tile(k, (1, 1, rep, 1))[:, :, idx]
        v = np.tile(v, (1, 1, rep, 1))[:, :, idx]
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd) + bias[None]
        logits -= logits.max(-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(-1, keepdims=True)
        att = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, n, d)
        x = x + att @ w[p + "attention.wo.weight"].T
        y = _rms(x, w[p + "ffn_norm.weight"], eps)
        gate_up = y @ w[p + "feed_forward.w1.weight"].T
        f = gate_up.shape[-1] // 2
        gate, up = gate_up[..., :f], gate_up[..., f:]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "feed_forward.w2.weight"].T
    return x


def random_step_llm_weights(cfg: dict, seed: int = 0) -> dict:
    """Random float32 weights under the release's key names for a release config dict."""
    rng = np.random.default_rng(seed)
    d, h, g = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_attention_groups"]
    hd = d // h
    f = 256 * ((cfg["ffn_hidden_size"] + 255) // 256)  # the release's multiple_of rounding
    out = {"tok_embeddings.word_embeddings.weight": rng.normal(0, 1, (cfg["padded_vocab_size"], d))}
    for i in range(cfg["num_layers"]):
        p = f"transformer.layers.{i}."
        out[p + "attention_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
        out[p + "ffn_norm.weight"] = 1 + 0.1 * rng.normal(size=d)
        out[p + "attention.wqkv.weight"] = rng.normal(0, d**-0.5, (d + 2 * g * hd, d))
        out[p + "attention.wo.weight"] = rng.normal(0, d**-0.5, (d, d))
        out[p + "feed_forward.w1.weight"] = rng.normal(0, d**-0.5, (2 * f, d))
        out[p + "feed_forward.w2.weight"] = rng.normal(0, f**-0.5, (d, f))
    return {k: v.astype(np.float32) for k, v in out.items()}


def step_llm_release_config(
    hidden: int, heads: int, groups: int, ffn: int = 256, layers: int = 2, vocab: int = 64
) -> dict:
    return {
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_attention_groups": groups,
        "ffn_hidden_size": ffn,
        "num_layers": layers,
        "padded_vocab_size": vocab,
        "layernorm_epsilon": 1e-5,
        "seq_length": 320,
        "use_flash_attn": True,
    }
