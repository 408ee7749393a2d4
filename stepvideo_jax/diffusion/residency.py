"""Component residency for sampling: all components resident for the whole run, or one at a time.

`config.residency`:
  "all"         (default) the text encoders, the VAE and the DiT are loaded together (`load_components`)
                and stay resident; the peak is their sum.
  "sequential"  each stage loads what it needs and frees it before the next: the text encoders
                encode the prompt and the negative prompt; the VAE encodes the first image; the DiT
                (restored straight into its shardings) denoises; the VAE decodes. The peak is the
                largest stage, not the sum. The frames are bit-identical to "all": the same
                functions run on the same inputs, only the loading order differs.

`config.dit_quantize` / `config.text_quantize` ("" = as converted, "none", "int8", "fp8") choose the
weight-only quantization of the DiT / Step-LLM; a float checkpoint is quantized at restore, on the
devices (`stepvideo_jax.quantize.restore_quantized`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RESIDENCY_MODES", "check_memory_options", "SequentialPipeline", "component_loaders"]

RESIDENCY_MODES = ("all", "sequential")
_QUANTIZE_CHOICES = ("", "none", "int8", "fp8")


def check_memory_options(config) -> None:
    """One-line errors for the residency and quantization fields (absent fields mean the defaults)."""
    residency = config.get("residency", "all")
    if residency not in RESIDENCY_MODES:
        raise ValueError(f"residency must be one of {', '.join(RESIDENCY_MODES)}; got {residency!r}")
    for name in ("dit_quantize", "text_quantize"):
        value = config.get(name, "")
        if value not in _QUANTIZE_CHOICES:
            raise ValueError(f"{name} must be one of '', 'none', 'int8', 'fp8' ('' = as converted); got {value!r}")
    if config.variant == "tiny" and (config.get("dit_quantize", "") or config.get("text_quantize", "")):
        raise ValueError("dit_quantize / text_quantize apply to converted checkpoints; the tiny variant has none")


def quantize_override(config, field: str) -> dict[str, str]:
    """{"quantize": mode} for a component restore when the sampling config asks for one, else {}."""
    value = config.get(field, "")
    return {"quantize": value} if value else {}


def component_loaders(config, mesh) -> dict[str, Callable[[], Any]]:
    """{"text": () -> PromptEncoder, "vae": () -> VideoVAE, "dit": () -> StepVideoDiT}: each call
    loads that component alone (the tiny variant builds its random models and keeps the one asked for)."""
    from stepvideo_jax.diffusion import pipeline

    if config.variant == "tiny":
        pick = lambda i: (lambda: pipeline._tiny_components(config, mesh)[i])
        return {"dit": pick(0), "vae": pick(1), "text": pick(2)}

    import os

    from stepvideo_jax.checkpoint import component_config, restore_component, tokenizer_dir
    from stepvideo_jax.text import ClipTokenizer, PromptEncoder, StepTokenizer

    ckpt = config.checkpoint_dir
    pipeline._check_checkpoint_dir(ckpt)
    param_dtype = config.param_dtype or None

    def restore(name: str, **runtime):
        cfg = dataclasses.replace(component_config(ckpt, name), **runtime)
        return restore_component(ckpt, name, mesh=mesh, config=cfg, dtype=param_dtype)

    def text():
        step_llm = restore("step_llm", dtype=config.text_dtype, **quantize_override(config, "text_quantize"))
        clip = restore("hunyuan_clip", dtype=config.text_dtype)
        step_tok = StepTokenizer(os.path.join(tokenizer_dir(ckpt, "step_llm"), "step1_chat_tokenizer.model"),
                                 max_length=step_llm.cfg.max_length)
        clip_tok = ClipTokenizer(tokenizer_dir(ckpt, "hunyuan_clip"), max_length=clip.cfg.max_length)
        return PromptEncoder(step_llm, step_tok, clip, clip_tok)

    def dit():
        model = restore("transformer", dtype=config.dit_dtype, attention_kernel=config.attention_kernel,
                        **quantize_override(config, "dit_quantize"))
        if bool(model.cfg.use_additional_conditions) != bool(config.use_additional_conditions):
            raise ValueError(
                f"{ckpt}: the converted transformer has use_additional_conditions={model.cfg.use_additional_conditions}, "
                f"but this config (task {config.task!r}) needs {bool(config.use_additional_conditions)}"
            )
        return model

    return {"text": text, "vae": lambda: restore("vae", dtype=config.vae_dtype), "dit": dit}


def _free() -> None:
    """Drops the arrays of a component whose last reference was just deleted."""
    gc.collect()


class SequentialPipeline:
    """`VideoPipeline`'s computation with one component resident at a time (see the module docstring)."""

    def __init__(self, loaders: dict[str, Callable[[], Any]], mesh=None):
        self.loaders = loaders
        self.mesh = mesh
        self.stage_seconds: dict[str, float] = {}

    def __call__(self, settings, image: np.ndarray | None):
        from stepvideo_jax.diffusion.flow_match import flow_sigmas
        from stepvideo_jax.diffusion.pipeline import GenerationResult, VideoPipeline, _to_host, latent_grid
        from stepvideo_jax.diffusion.sampler import Sampler

        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        noise_key, posterior_key = jax.random.split(jax.random.key(settings.seed))
        # Stage 1: text encoders -> the CFG batch's text states; then freed.
        stage = VideoPipeline.__new__(VideoPipeline)  # its encode_* methods, with one component set
        stage.prompt_encoder = self.loaders["text"]()
        text = jax.block_until_ready(stage.encode_text(settings.prompt, settings.positive_magic, settings.negative_magic))
        stage.prompt_encoder = None
        _free()
        lap("text_encode_s")
        # Stage 2: the VAE encodes the first image (TI2V); kept only for its config until the decode.
        stage.vae = self.loaders["vae"]()
        vae_cfg = stage.vae.cfg
        f, h, w = latent_grid(settings.frames, settings.height, settings.width, vae_cfg)
        condition = None
        if settings.ti2v:
            if image is None or image.shape != (settings.height, settings.width, 3):
                raise ValueError(
                    f"image must be [{settings.height}, {settings.width}, 3] in [-1, 1] (see prepare_image); "
                    f"got {None if image is None else image.shape}"
                )
            condition = jax.block_until_ready(stage.encode_image(image, f, posterior_key))
        stage.vae = None
        _free()
        lap("image_encode_s")
        # Stage 3: the DiT denoises; then freed.
        dit = self.loaders["dit"]()
        if bool(dit.cfg.use_additional_conditions) != settings.ti2v:
            raise ValueError(
                f"settings are for {'TI2V' if settings.ti2v else 'T2V'} but the DiT has "
                f"use_additional_conditions={dit.cfg.use_additional_conditions}"
            )
        noise = jax.random.normal(noise_key, (1, f, dit.cfg.in_channels, h, w), jnp.float32)
        latents = jnp.transpose(noise, (0, 1, 3, 4, 2))  # [1, F', h, w, C]
        sampler = Sampler(dit)
        del dit
        latents = sampler.sample(
            latents,
            flow_sigmas(settings.steps, settings.time_shift),
            text,
            condition,
            settings.motion_score,
            settings.cfg,
            fused=settings.fused_loop,
            progress=settings.progress,
        )
        jax.block_until_ready(latents)
        del sampler
        _free()
        lap("denoise_s")
        # Stage 4: the VAE decodes.
        vae = self.loaders["vae"]()
        if self.mesh is None:
            video = vae.decode_channels_last(latents)  # [1, F, H, W, 3]
        else:
            from stepvideo_jax.sharding import sharded_vae_decode

            video = sharded_vae_decode(vae, latents, self.mesh)
        video = np.clip(_to_host(video)[0].astype(np.float32), -1.0, 1.0)  # [F, H, W, 3]
        del vae
        _free()
        lap("decode_s")
        return GenerationResult(
            video=video,
            latents=_to_host(latents),
            condition=None if condition is None else _to_host(condition),
            timings=timings,
        )
