"""The training loop: data -> (online encoding) -> sharded train step -> metrics and checkpoints.

``config.network`` picks the network: ``"dit"`` (default) trains the DiT with flow matching on latents
(precomputed, or encoded online from raw clips); ``"vae"`` trains the Video-VAE on raw clips
(``data.kind = "video"``) with reconstruction + KL (``training.vae_objective``).

``train(config, workdir)`` runs ``config.train.steps`` steps, resuming from the latest checkpoint in
``workdir/checkpoints`` if there is one (model, optimizer, step, rng and data-iterator state, so the
resumed run continues exactly as an uninterrupted one). A non-finite loss or gradient norm stops the
run with a ``FloatingPointError`` naming the step; the state of that step is never saved, so the last
checkpoint on disk is the last good one. A TPU preemption notice forces a checkpoint and a clean stop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from stepvideo_jax.components import component_config, restore_component
from stepvideo_jax.config import dataclass_from
from stepvideo_jax.data.pipeline import DataConfig, make_dataset
from stepvideo_jax.dit import DiTConfig, StepVideoDiT
from stepvideo_jax.lora import (
    adapter_arrays,
    apply_lora,
    config_to_json,
    fingerprint_checkpoint,
    save_adapter,
)
from stepvideo_jax.sharding import MeshConfig, make_mesh
from stepvideo_jax.training.checkpointing import RunCheckpoints
from stepvideo_jax.training.dit_trainer import dit_trainer, lora_config_of
from stepvideo_jax.training.metrics import MetricsWriter
from stepvideo_jax.training.objective import ObjectiveConfig
from stepvideo_jax.training.optimizer import OptimConfig
from stepvideo_jax.training.state import Trainer
from stepvideo_jax.training.vae_objective import VAEObjectiveConfig
from stepvideo_jax.vae import VAEConfig, VideoVAE

__all__ = ["TrainResult", "train", "load_trained_model", "load_null_text", "NULL_PROMPT_FILE"]

# Written by tools/precompute.py next to its index: the text arrays of the prompt used for dropped captions.
NULL_PROMPT_FILE = "null_prompt.npz"
# A LoRA run's base fingerprint (checked on resume) and, when it finishes, its adapter file.
LORA_RECORD = "lora_base.json"
ADAPTER_FILE = "adapter.safetensors"


@dataclasses.dataclass
class TrainResult:
    losses: dict[int, float]  # step (0-based index of the update) -> loss
    final_step: int  # completed updates
    data_summary: str
    preempted: bool = False
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run (checkpoint saved)


class _StopRequest:
    """SIGINT / SIGTERM while training: the current step finishes, is checkpointed, and the run stops
    (like a TPU preemption notice). A second signal interrupts at once."""

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


MODEL_CONFIG_FILE = "model_config.json"  # in the workdir: the model config the run started with


def _check_model_config(workdir: str, network: str, model_cfg, resuming: bool) -> None:
    """Writes the model config on the first start; on a resume, fails naming the fields that differ
    (other than the fields that only choose how the network runs)."""
    from stepvideo_jax.components import COMPONENTS

    if "://" in workdir:  # a bucket workdir: the check is skipped (plain file I/O below)
        return
    current = json.loads(json.dumps(dataclasses.asdict(model_cfg)))
    path = os.path.join(workdir, MODEL_CONFIG_FILE)
    if resuming and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        runtime = COMPONENTS["vae" if network == "vae" else "transformer"].runtime_fields
        diffs = [
            f"{k}: checkpoint {saved.get(k)!r}, config {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if k not in runtime and saved.get(k) != current.get(k)
        ]
        if diffs:
            raise ValueError(
                f"{workdir}: cannot resume, the model config changed since the checkpoints were written: "
                + "; ".join(diffs)
                + " (use the original config or a new --workdir)"
            )
        return
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(current, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def load_null_text(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in ("llm_states", "llm_mask", "clip_states")}


def _vae_params_with_logvar_bias(trainer: Trainer, seed: int, bias: float) -> dict:
    """A random VAE whose encoder starts with log-variance ``bias`` everywhere (its output conv's
    log-variance biases). With the default 0 the posterior sample starts as unit noise that hides
    the mean from the decoder, and reconstruction stalls until the encoder learns to shrink it."""
    model = trainer.make_model(nnx.Rngs(jax.random.key(seed, impl="threefry2x32")))
    conv = model.encoder.conv_out
    z = model.cfg.z_channels
    conv.bias[...] = conv.bias[...].at[z:].set(bias)
    return trainer.params_of(model)


def _converted_params(trainer: Trainer, ckpt: str, name: str, model_cfg) -> dict:
    """The trainable parameters of a converted component, in the training config's parameter dtype:
    a bfloat16 checkpoint (the shipped demo, a release converted to bf16) starts float32 master weights."""
    stored = component_config(ckpt, name)
    model = restore_component(ckpt, name, config=dataclasses.replace(model_cfg, param_dtype=stored.param_dtype))
    dtype = jnp.dtype(model_cfg.param_dtype)
    return jax.tree.map(lambda x: x.astype(dtype), trainer.params_of(model))


def _initial_params(config, trainer: Trainer, model_cfg, network: str = "dit"):
    """None for a random init, else parameters restored from a converted checkpoint (T2V ones widened)."""
    init = config.get("init", ml_collections.ConfigDict({"kind": "random"}))
    kind = init.get("kind", "random")
    if kind == "random":
        if network == "vae" and init.get("logvar_bias") is not None:
            return _vae_params_with_logvar_bias(trainer, int(config.train.seed), float(init.logvar_bias))
        return None
    if network == "vae":
        if kind != "converted":
            raise ValueError(f"network 'vae' takes init.kind 'random' or 'converted'; got {kind!r}")
        return _converted_params(trainer, init.checkpoint, "vae", model_cfg)

    if kind == "converted":  # a converted TI2V transformer
        return _converted_params(trainer, init.checkpoint, "transformer", model_cfg)
    if kind == "t2v":  # a converted T2V transformer, widened to TI2V
        from stepvideo_jax.training.ti2v_init import widen_t2v_to_ti2v

        t2v_cfg = dataclasses.replace(model_cfg, use_additional_conditions=False)
        t2v = restore_component(init.checkpoint, "transformer", config=t2v_cfg)
        return trainer.params_of(widen_t2v_to_ti2v(t2v, seed=int(config.train.seed), cfg=model_cfg))
    raise ValueError(f"init.kind must be 'random', 'converted' or 't2v'; got {kind!r}")


def _build_trainer(config: ml_collections.ConfigDict):
    """(network, Trainer, model config, objective config) of a training config."""
    network = config.get("network", "dit")
    if network not in ("dit", "vae"):
        raise ValueError(f"config.network must be 'dit' or 'vae'; got {network!r}")
    optim = dataclass_from(OptimConfig, config.optim)
    mesh = make_mesh(MeshConfig.parse(config.mesh))
    if network == "vae":
        model_cfg = dataclass_from(VAEConfig, config.model)
        objective = dataclass_from(VAEObjectiveConfig, config.objective)
        trainer = Trainer(lambda rngs: VideoVAE(model_cfg, rngs=rngs), optim, objective, mesh)
    else:
        model_cfg = dataclass_from(DiTConfig, config.model)
        objective = dataclass_from(ObjectiveConfig, config.objective)
        # LoRA: only the adapters train; the base weights are frozen beside the state (set_frozen)
        trainer = dit_trainer(model_cfg, optim, objective, mesh, lora=lora_config_of(config))
    return network, trainer, model_cfg, objective


def _prepare_lora(config, trainer: Trainer, model_cfg, workdir: str):
    """Sets the frozen base weights of a LoRA run (the converted checkpoint `init.checkpoint`, or a
    random base for `init.kind="random"`), checks a resumed run uses the same base, and returns
    (initial adapter params, base fingerprint)."""
    lora_cfg, lora_seed = lora_config_of(config)
    init = config.init
    if init.kind == "converted":
        base = restore_component(init.checkpoint, "transformer", config=model_cfg)
        fingerprint = fingerprint_checkpoint(init.checkpoint)
    elif init.kind == "random":
        base = StepVideoDiT(model_cfg, rngs=nnx.Rngs(jax.random.key(int(config.train.seed), impl="threefry2x32")))
        fingerprint = f"random-seed{int(config.train.seed)}"
    else:
        raise ValueError(f"a LoRA run takes init.kind 'converted' (the base checkpoint) or 'random'; got {init.kind!r}")
    adapted = apply_lora(base, lora_cfg, seed=lora_seed)
    trainer.set_frozen(trainer.frozen_of(adapted))
    record = os.path.join(workdir, LORA_RECORD)
    if os.path.exists(record):
        with open(record) as f:
            previous = json.load(f).get("base_fingerprint")
        if previous != fingerprint:
            raise ValueError(
                f"{workdir}: this LoRA run was started on base {previous}, not {fingerprint}; "
                "use a new workdir for another base"
            )
    elif jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(record + ".tmp", "w") as f:
            json.dump({"base_fingerprint": fingerprint, "lora": config_to_json(lora_cfg)}, f)
        os.replace(record + ".tmp", record)
    return trainer.params_of(adapted), fingerprint, lora_cfg


def load_trained_model(config: ml_collections.ConfigDict, workdir: str, *, use_ema: bool = True):
    """The network of the latest checkpoint in ``workdir/checkpoints`` (its EMA weights when the run
    kept them and ``use_ema``), as an nnx module with the trained config. Only the weights are read: the
    config's optimizer settings (e.g. ``optim.frozen``) need not be the run's."""
    _, trainer, _, _ = _build_trainer(config)
    checkpoints = RunCheckpoints(os.path.join(workdir, "checkpoints"), save_every=1, max_to_keep=1, async_save=False)
    try:
        step = checkpoints.latest_step()
        if step is None:
            raise FileNotFoundError(f"{workdir}/checkpoints: no checkpoint to load")
        state = checkpoints.restore_weights(step, trainer.abstract_state())
    finally:
        checkpoints.close()
    params = state["ema"] if use_ema and "ema" in state else state["params"]
    return trainer.model_of(params)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    make_encoder: Callable[[ObjectiveConfig], Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    network, trainer, model_cfg, objective = _build_trainer(config)
    data_cfg = dataclass_from(DataConfig, {k: v for k, v in config.data.items() if k != "null_prompt"})
    seed = int(config.train.seed)
    data_iter = iter(make_dataset(data_cfg))
    encoder = null_dev = None
    if network == "vae":
        if data_cfg.kind != "video" or data_cfg.num_frames != model_cfg.frame_len:
            raise ValueError(
                f"network 'vae' trains on raw clips of one VAE chunk: data.kind must be 'video' and data.num_frames "
                f"{model_cfg.frame_len}; got {data_cfg.kind!r}, {data_cfg.num_frames}"
            )
    else:
        # Data, and how batches become latents.
        if data_cfg.kind == "video":
            if make_encoder is None:
                raise ValueError(
                    "data.kind='video' needs the VAE and text encoders: pass make_encoder (train.py builds it)"
                )
            encoder = make_encoder(objective)
            null_text = encoder.null_text(config.data.get("null_prompt", "") or "")
        else:
            null_path = config.data.get("null_prompt") or os.path.join(
                os.path.dirname(data_cfg.manifest), NULL_PROMPT_FILE
            )
            null_text = load_null_text(null_path) if os.path.exists(null_path) else None
        if null_text is None and objective.caption_dropout > 0:
            raise ValueError(f"caption_dropout > 0 needs the null prompt's text states; {NULL_PROMPT_FILE} not found")
        null_dev = None if null_text is None else trainer.device_replicated(null_text)

    ckpt = config.checkpoint
    checkpoints = RunCheckpoints(
        os.path.join(workdir, "checkpoints"),
        save_every=int(ckpt.every),
        max_to_keep=int(ckpt.keep),
        async_save=bool(ckpt.get("async_save", True)),
    )
    lora = None
    if trainer.frozen_shardings is not None:
        lora = _prepare_lora(config, trainer, model_cfg, workdir)
    _check_model_config(workdir, network, model_cfg, resuming=checkpoints.latest_step() is not None)
    latest, state = checkpoints.restore_newest_readable(trainer.abstract_state(), data_iter, warn=logging.warning)
    if latest is not None:
        logging.info("resumed from step %d (%s)", latest, checkpoints.directory)
    elif lora is not None:
        state = trainer.init_state(seed, lora[0])
    else:
        state = trainer.init_state(seed, _initial_params(config, trainer, model_cfg, network))
    start = int(jax.device_get(state["step"]))
    total = int(config.train.steps)

    writer = MetricsWriter(
        os.path.join(workdir, "tensorboard") if config.train.get("tensorboard", True) else None, echo=None
    )
    log_every = int(config.train.get("log_every", 10))
    encode_key = jax.random.key(seed + 1)
    result = TrainResult(losses={}, final_step=start, data_summary="")
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)
        writer.echo = bar.write
    flops = None
    stop = _StopRequest().__enter__()  # left in `finally` (not a `with`: keeps the loop's indentation)
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            host_batch = next(data_iter)
            if encoder is not None:
                host_batch = encoder(host_batch, jax.random.fold_in(encode_key, step))
            batch = trainer.device_batch(host_batch)
            if flops is None:  # compiles the step; not counted in the step time
                flops = trainer.step_flops(state, batch, null_dev)
                t0 = time.perf_counter()
            state, metrics = trainer.step(state, batch, null_dev)
            loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                checkpoints.wait()
                last = checkpoints.latest_step()
                where = (
                    "no checkpoint was saved yet"
                    if last is None
                    else (f"the last good checkpoint is step {last} in {checkpoints.directory}")
                )
                raise FloatingPointError(
                    f"non-finite loss {loss} (grad norm {grad_norm}) at step {step}; stopping; {where}"
                )
            seconds = time.perf_counter() - t0
            result.losses[step] = loss
            result.final_step = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            if (step + 1) % log_every == 0 or step == start:
                examples = next(v for v in host_batch.values() if hasattr(v, "shape")).shape[0] * jax.process_count()
                writer.write(
                    step + 1,
                    {
                        "loss": loss,
                        "grad_norm": grad_norm,
                        "lr": float(metrics["lr"]),
                        "step_seconds": seconds,
                        "examples_per_second": examples / seconds,
                        "tflops_per_device": (flops or 0.0) / seconds / 1e12,
                    },
                )
            preempted = checkpoints.reached_preemption(step + 1)
            force = preempted or stop.signal is not None or step + 1 == total
            checkpoints.save(step + 1, state, data_iter, force=force)
            if preempted:
                logging.warning("preemption notice at step %d: checkpoint saved, stopping", step + 1)
                result.preempted = True
                break
            if stop.signal is not None:
                logging.warning("%s at step %d: checkpoint saved, stopping", stop.signal, step + 1)
                result.interrupted = stop.signal
                break
    finally:
        stop.__exit__()
        checkpoints.close()
        writer.close()
        if bar is not None:
            bar.close()
        result.data_summary = data_iter.summary()
        logging.info("%s", result.data_summary)
    if lora is not None and jax.process_index() == 0 and result.final_step == total:
        params = state["ema"] if "ema" in state else state["params"]
        model = trainer.model_of(params)
        save_adapter(os.path.join(workdir, ADAPTER_FILE), adapter_arrays(model), lora[2], base_fingerprint=lora[1])
    return result
