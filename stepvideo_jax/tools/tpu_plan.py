"""Plan from the TPU compiler: each part of the pipeline compiled deviceless for a TPU topology.

``plan_part(target, mesh, part)`` builds one part of the pipeline (``PARTS``: ``sample`` one DiT
sampling step with CFG, ``train`` one training step of the training config, ``llm`` / ``clip`` the
prompt encodings, ``vae`` the decode of one video) at the release's sizes on a ``Mesh`` of the
topology's compile-only devices (``tools.tpu_target``), compiles it with the TPU compiler (libtpu)
and returns what that compiler says per device: argument / output / temporary / peak bytes against
the chip's HBM, the collectives of the compiled HLO, the Mosaic (Pallas) kernels in it, and an
**estimated** step time:

* XLA part: the TPU cost model's ``optimal_seconds``. It counts a loop body once, so for a
  scanned layer stack the compiled program is the non-layer ops plus one layer, and the same sharded
  program compiled with 0 layers separates them: ``xla_seconds = s0 + L (s_scan - s0)``; a stack
  that is not scanned is compiled unrolled with 1 and 2 layers: ``s1 + (L - 1) (s2 - s1)`` (the
  per-step collectives and XLA FLOPs likewise). The 0-layer program has no attention kernels and
  compiles in seconds where each unrolled one costs about as much as the whole step.
* Pallas attention (``splash``), which the cost model does not price: its FLOPs (padded to the
  kernel's blocks) per device at the chip's bf16 peak times ``kernel_efficiency`` (a stated
  assumption, default ``KERNEL_EFFICIENCY``).

Left out (not modelled): host and launch overheads, the latency of collectives the compiler could
not overlap, input pipelines. Every time figure is an estimate.

A part is a builder ``(mesh, sizes, config, layers) -> Program`` registered in ``PARTS``; ``config``
overrides the part's model / training config (``None``: the release's), ``layers`` asks for the
unrolled variant with that many layers. Other parts (quantized sampling, LoRA training) register
their own builders.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stepvideo_jax.attention.splash import BLOCK as SPLASH_BLOCK
from stepvideo_jax.attention.ulysses import ulysses_plan
from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT
from stepvideo_jax.sharding import MeshConfig, constrain, make_mesh, use_mesh_rules
from stepvideo_jax.text import TEXT_SHARDING
from stepvideo_jax.tools.plan import (
    PlanSizes,
    _abstract,
    _dit_inputs,
    _dit_model_flops,
    _input,
    _sample_step_fn,
)
from stepvideo_jax.tools.tpu_target import (
    chip_spec,
    hlo_collectives,
    mosaic_kernel_count,
    resolve_topology,
    topology_devices,
    xla_optimal_seconds,
)
from stepvideo_jax.vae import VAE_SHARDING

__all__ = [
    "Program", "PARTS", "register_part", "plan_part", "KERNEL_EFFICIENCY", "STEPS", "mesh_for", "release_dit",
    "release_train_config", "pipeline_summary", "candidate_meshes", "search", "format_parts", "format_search",
    "jsonable",
]  # fmt: skip

KERNEL_EFFICIENCY = 0.5  # assumed fraction of the chip's bf16 peak the splash kernel reaches
STEPS = 50  # sampling steps per video


@dataclasses.dataclass
class Program:
    """One compilable part: ``fn(*args)`` under ``rules``, and what the estimate needs about it."""

    fn: Callable
    args: tuple
    rules: Any
    donate: tuple[int, ...] = ()
    out_shardings: Any = None
    layers: int | None = None  # depth of the layer stack (None: nothing to extrapolate)
    # The layer stack is one scanned loop (its body priced once by the cost model): the estimate then
    # needs only a 0-layer compile beside this one (see `plan_part`); otherwise 1- and 2-layer unrolled ones.
    scanned: bool = False
    model_flops: float = 0.0  # matmul FLOPs of the whole step (all devices)
    pallas_flops_per_device: float = 0.0  # FLOPs inside Pallas kernels, per device (not costed by XLA)
    attention_kernel: str = "xla"
    calls_per_video: int = 1  # how often a video runs this part (50 for a sampling step)
    weight_args: tuple[int, ...] = (0,)  # the arguments holding weights / train state (and a frozen base)
    notes: dict = dataclasses.field(default_factory=dict)


PartBuilder = Callable[[Mesh, PlanSizes, Any, "int | None"], Program]
PARTS: dict[str, PartBuilder] = {}


def register_part(name: str):
    def wrap(fn: PartBuilder) -> PartBuilder:
        PARTS[name] = fn
        return fn

    return wrap


def mesh_for(target: str, mesh: str | MeshConfig) -> Mesh:
    """The ("data", "fsdp", "sequence", "tensor") mesh over a topology's compile-only TPU devices."""
    cfg = MeshConfig.parse(mesh) if isinstance(mesh, str) else mesh
    return make_mesh(cfg, topology_devices(target))


# ------------------------------------------------------------------------------------------ the DiT
def release_dit(*, train: bool = False, **overrides) -> DiTConfig:
    """The released 30B TI2V DiT as planned: bf16 compute, bf16 weights for sampling (float32
    master weights and full remat for training), splash attention."""
    kw = dict(
        dtype="bfloat16", param_dtype="float32" if train else "bfloat16",
        remat_policy="full" if train else "none", attention_kernel="splash",
    )  # fmt: skip
    kw.update(overrides)
    return DiTConfig(**kw)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _splash_flops_per_device(cfg: DiTConfig, sizes: PlanSizes, batch: int, mesh: Mesh, *, passes: float) -> float:
    """FLOPs the splash kernel runs per device for one DiT forward x ``passes``: self- and
    cross-attention logits and values (4 S_q S_k D per head), at the kernel's padded lengths, split
    over the mesh axes that shard the attention's [batch, seq, heads] (Ulysses trades the sequence
    split for a head split of the same size)."""
    f, h, w = sizes.latent_shape
    n, m = f * h * w, sizes.clip_tokens + sizes.llm_tokens
    pad = lambda s: _round_up(s, min(SPLASH_BLOCK, _round_up(s, 128)))
    q_shape = (batch, n, cfg.num_heads, cfg.head_dim)
    with use_mesh_rules(mesh, DIT_SHARDING):
        spec, _, _mode = ulysses_plan(mesh, DIT_SHARDING.activations, q_shape, self_attention=True)
    axes = [a for part in spec[:3] if part for a in ((part,) if isinstance(part, str) else part)]
    split = math.prod(mesh.shape[a] for a in axes)
    # Ulysses: each device runs its heads over the whole sequence; gather-KV: its queries over all keys.
    per_head = 4 * pad(n) * pad(n) * cfg.head_dim + 4 * pad(n) * pad(m) * cfg.head_dim
    total = batch * cfg.num_layers * cfg.num_heads * per_head
    return passes * total / split


def _dit_layers(cfg: DiTConfig, layers: int | None) -> DiTConfig:
    return cfg if layers is None else dataclasses.replace(cfg, num_layers=layers, scan_layers=False)


@register_part("sample")
def sample_part(mesh: Mesh, sizes: PlanSizes, config: DiTConfig | None, layers: int | None) -> Program:
    """One sampling step: the DiT on the CFG batch (2 rows), guidance and an Euler update."""
    full = config or release_dit()
    cfg = _dit_layers(full, layers)
    graphdef, state, params = _abstract(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), mesh, DIT_SHARDING)
    inputs = _dit_inputs(cfg, sizes, sizes.cfg_batch, mesh)
    dt = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    return Program(
        _sample_step_fn(graphdef, state), (params, *inputs.values(), dt), DIT_SHARDING,
        layers=full.num_layers, scanned=full.scan_layers and layers is None,
        model_flops=_dit_model_flops(full, sizes, sizes.cfg_batch, train=False),
        pallas_flops_per_device=_splash_flops_per_device(full, sizes, sizes.cfg_batch, mesh, passes=1.0)
        if full.attention_kernel == "splash" else 0.0,
        attention_kernel=full.attention_kernel, calls_per_video=STEPS,
        notes=dict(remat_policy=full.remat_policy, param_dtype=full.param_dtype, quantize=full.quantize,
                   batch=sizes.cfg_batch),
    )  # fmt: skip


def release_train_config():
    """The 30B training config (``train_ti2v``, variant ``full``) with splash attention."""
    from stepvideo_jax.configs import get_config

    config = get_config("train_ti2v:full")
    config.model.attention_kernel = "splash"
    return config


def _dit_lora_train_flops(full: DiTConfig, sizes: PlanSizes, batch: int, adapters: dict[str, int]) -> float:
    """Matmul FLOPs of one LoRA training step (all devices). The frozen base takes no weight
    gradients, so its projections run forward + backward w.r.t. the activations = 2 x forward, while
    the attention logits / values (two activation operands, both need gradients) stay 3 x forward;
    the adapters train: 3 x their forward 2 T (in + out) r per layer, T the tokens they see (the
    text tokens for the cross-attention's `wkv`, the video tokens otherwise):

        2 fwd(projections + FFN) + 3 fwd(attention core) + 3 sum_adapters 2 B T r (in + out) L
    """
    f, h, w = sizes.latent_shape
    n, m = f * h * w, sizes.clip_tokens + sizes.llm_tokens
    d, L = full.hidden_size, full.num_layers
    core = 2 * 2 * n * n * d + 2 * 2 * n * m * d  # self- and cross-attention logits + values, per layer
    fwd = _dit_model_flops(full, sizes, batch, train=False)
    projections = fwd - batch * L * core
    adapter_fwd = sum(2 * batch * (m if "wkv" in name else n) * size for name, size in adapters.items())
    return 2 * projections + 3 * batch * L * core + 3 * adapter_fwd


def _adapter_sizes(trainer) -> dict[str, int]:
    """{module path: adapter parameters (A and B, all layers)} of a LoRA trainer."""
    out: dict[str, int] = {}
    for path, a in jax.tree_util.tree_flatten_with_path(trainer.abstract_params)[0]:
        name = ".".join(str(getattr(k, "key", k)) for k in path[:-1])
        out[name] = out.get(name, 0) + a.size
    return out


def _tree_bytes(tree) -> int:
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree))


@register_part("train")
def train_part(mesh: Mesh, sizes: PlanSizes, config, layers: int | None) -> Program:
    """One step of the real trainer (``training.Trainer``: flow-matching loss, caption dropout, AdamW
    with clipping, EMA, donated state) on a training config's model, optimizer and batch size. A
    config with a ``lora`` section plans LoRA training as ``training.loop`` runs it
    (``training.dit_trainer``): only the adapters (and their optimizer state) are in the donated
    state; the frozen base (bf16, or int8 / fp8 with ``model.quantize``: QLoRA) is a separate,
    not donated argument of the step."""
    from stepvideo_jax.training.dit_trainer import dit_trainer, lora_config_of
    from stepvideo_jax.training.objective import ObjectiveConfig
    from stepvideo_jax.training.optimizer import OptimConfig

    config = config or release_train_config()
    fields = dict(config.model)
    for k in ("caption_channels", "rope_split"):
        fields[k] = tuple(fields[k])
    full = DiTConfig(**fields)
    cfg = _dit_layers(full, layers)
    optim = OptimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(config.optim).items()})
    objective = ObjectiveConfig(**dict(config.objective))
    lora = lora_config_of(config)
    # The 0-layer stack of the estimate (see plan_part) has no block linears for the adapters.
    trainer = dit_trainer(cfg, optim, objective, mesh, lora=lora, rules=DIT_SHARDING, require_targets=layers != 0)
    batch = int(config.data.batch_size)
    f, h, w = sizes.latent_shape
    dt = cfg.jnp_dtype
    shapes = dict(
        latents=((batch, f, h, w, cfg.in_channels), jnp.float32), condition=((batch, 1, h, w, cfg.in_channels), dt),
        llm_states=((batch, sizes.llm_tokens, cfg.caption_channels[0]), dt), llm_mask=((batch, sizes.llm_tokens), jnp.int32),
        clip_states=((batch, sizes.clip_tokens, cfg.caption_channels[1]), dt), motion_score=((batch,), jnp.float32),
    )  # fmt: skip
    batch_args = {k: jax.ShapeDtypeStruct(s, d, sharding=trainer.batch_sharding(s)) for k, (s, d) in shapes.items()}
    rep = trainer.replicated
    null_text = {
        k: jax.ShapeDtypeStruct(shapes[k][0][1:], shapes[k][1], sharding=rep)
        for k in ("llm_states", "llm_mask", "clip_states")
    }
    state = trainer.abstract_state()
    fixed = jax.ShapeDtypeStruct((), jnp.bool_, sharding=rep)
    out_shardings = (trainer.state_shardings, rep)
    frozen = trainer.abstract_frozen()  # None for full training

    def step(state, batch, null_text, fixed_noise, frozen):
        return trainer._step_fn(state, batch, null_text, fixed_noise, frozen)

    notes = dict(remat_policy=full.remat_policy, param_dtype=full.param_dtype, batch=batch,
                 optimizer=f"adamw b2={optim.b2} clip={optim.grad_clip} ema={optim.ema_decay}")  # fmt: skip
    if lora is None:
        model_flops = _dit_model_flops(full, sizes, batch, train=True)
    else:
        # Notes and FLOPs at the full depth (the 1- / 2-layer variants only feed the extrapolation).
        full_trainer = (
            trainer if layers is None else dit_trainer(full, optim, objective, mesh, lora=lora, rules=DIT_SHARDING)
        )
        n_trainable = sum(a.size for a in jax.tree.leaves(full_trainer.abstract_params))
        n_frozen = sum(a.size for a in jax.tree.leaves(full_trainer.abstract_frozen()))
        notes.update(
            lora_rank=lora[0].rank, lora_targets=list(lora[0].targets), quantize=full.quantize,
            trainable_params=n_trainable, total_params=n_trainable + n_frozen,
            trainable_fraction=n_trainable / (n_trainable + n_frozen),
            optimizer_state_bytes=_tree_bytes(full_trainer.abstract_state()["opt_state"]),
            frozen_base_bytes=_tree_bytes(full_trainer.abstract_frozen()),
        )  # fmt: skip
        model_flops = _dit_lora_train_flops(full, sizes, batch, _adapter_sizes(full_trainer))
    return Program(
        step, (state, batch_args, null_text, fixed, frozen), DIT_SHARDING, donate=(0,), out_shardings=out_shardings,
        layers=full.num_layers, scanned=full.scan_layers and layers is None, model_flops=model_flops,
        # forward, the full-remat recompute of the forward, backward (dq and dkv: 2 forwards); the same
        # with a frozen base (LoRA), since the attention's input gradients are still needed
        pallas_flops_per_device=_splash_flops_per_device(full, sizes, batch, mesh,
                                                         passes=4.0 if full.remat_policy == "full" else 3.0)
        if full.attention_kernel == "splash" else 0.0,
        attention_kernel=full.attention_kernel, calls_per_video=0, weight_args=(0, 4), notes=notes,
    )  # fmt: skip


# ------------------------------------------------------------------------------- text encoders, VAE
def _text_program(
    mesh, model, tokens: int, batch: int, num_layers: int, layers_cfg, out_index=None, scanned: bool = False
) -> Program:
    graphdef, state, params = _abstract(lambda: model(layers_cfg), mesh, TEXT_SHARDING)
    ids = _input((batch, tokens), jnp.int32, mesh, ("batch", None), TEXT_SHARDING)

    def encode(params, ids):
        state_ = nnx.replace_by_pure_dict(state, params) or state
        out = nnx.merge(graphdef, state_)(ids, jnp.ones_like(ids))
        return out if out_index is None else out[out_index]

    n_params = sum(x.size for x in jax.tree.leaves(params))
    return Program(
        encode, (params, ids), TEXT_SHARDING, layers=num_layers, scanned=scanned,
        model_flops=2.0 * n_params * batch * tokens,
        attention_kernel="xla", notes=dict(batch=batch, tokens=tokens, param_dtype=layers_cfg.param_dtype,
                                           quantize=getattr(layers_cfg, "quantize", "none")),
    )  # fmt: skip


@register_part("llm")
def llm_part(mesh: Mesh, sizes: PlanSizes, config, layers: int | None) -> Program:
    """Step-LLM encoding of the prompt and the negative prompt (2 x 320 tokens), bf16."""
    from stepvideo_jax.text import StepLLM, StepLLMConfig

    full = config or StepLLMConfig(param_dtype="bfloat16", dtype="bfloat16")
    cfg = full if layers is None else dataclasses.replace(full, num_layers=layers, scan_layers=False)
    make = lambda c: StepLLM(c, rngs=nnx.Rngs(0))
    scanned = full.scan_layers and layers is None
    return _text_program(mesh, make, sizes.llm_tokens, sizes.cfg_batch, full.num_layers, cfg, scanned=scanned)


@register_part("clip")
def clip_part(mesh: Mesh, sizes: PlanSizes, config, layers: int | None) -> Program:
    """HunyuanCLIP encoding of the prompt and the negative prompt (2 x 77 tokens), bf16."""
    from stepvideo_jax.text import ClipConfig, HunyuanCLIP

    full = config or ClipConfig(param_dtype="bfloat16", dtype="bfloat16")
    cfg = full if layers is None else dataclasses.replace(full, num_layers=layers, scan_layers=False)
    make = lambda c: HunyuanCLIP(c, rngs=nnx.Rngs(0))
    scanned = full.scan_layers and layers is None
    return _text_program(mesh, make, sizes.clip_tokens, sizes.cfg_batch, full.num_layers, cfg, out_index=0,
                         scanned=scanned)  # fmt: skip


@register_part("vae")
def vae_part(mesh: Mesh, sizes: PlanSizes, config, layers: int | None) -> Program:
    """Video-VAE v2 decode of one video's latents (6 chunks of 3 latent frames at 102 frames), the
    chunks spread over every mesh axis as ``sharding.sharded_vae_decode`` does, bf16, 3D convs;
    ``config`` may be a ``VAEConfig`` or ``(VAEConfig or None, tile)`` with spatial tiles (latent pixels)."""
    from stepvideo_jax.vae import VAEConfig, VideoVAE
    from stepvideo_jax.vae.model import blend_chunk_boundaries, tiled_map

    tile = None
    if isinstance(config, tuple):
        config, tile = config
    cfg = config or VAEConfig(param_dtype="bfloat16", dtype="bfloat16", conv_impl="conv3d")
    graphdef, state, params = _abstract(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0)), mesh, VAE_SHARDING)
    f, h, w = sizes.latent_shape
    chunk = cfg.latent_len
    n = f // chunk  # one video
    spread = math.prod(mesh.shape[a] for a in dict(VAE_SHARDING.activations)["chunk"])
    n_pad = -n % spread
    lat = jax.ShapeDtypeStruct(
        (1, f, h, w, cfg.z_channels), cfg.jnp_dtype, sharding=NamedSharding(mesh, PartitionSpec())
    )

    def decode(params, z):  # the program of sharding.sharded_vae_decode
        state_ = nnx.replace_by_pure_dict(state, params) or state
        model = nnx.merge(graphdef, state_)
        xs = z.reshape(n, chunk, *z.shape[2:])  # [n, chunk, h, w, z]
        xs = jnp.concatenate([xs, jnp.zeros((n_pad, *xs.shape[1:]), xs.dtype)]) if n_pad else xs
        xs = constrain(xs, ("chunk", None, None, None, None))
        dec = model.decoder if tile is None else (lambda x: tiled_map(model.decoder, x, tile, 4, cfg.spatial_factor))
        ys = constrain(dec(xs), ("chunk", None, None, None, None))[:n]  # [n, frames, H, W, C]
        ys = ys.reshape(1, n * ys.shape[1], *ys.shape[2:])
        return blend_chunk_boundaries(ys, cfg.decoded_frames(chunk), cfg.blend_keep)

    return Program(
        decode, (params, lat), VAE_SHARDING, layers=None, attention_kernel="xla",
        notes=dict(chunks=n, chunks_per_device=-(-n // spread), tile=tile, conv_impl=cfg.conv_impl,
                   caveat="loop bodies (tiles, the mid-block attention's query blocks) priced once: a lower bound"),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ compile
def _compile(prog: Program, mesh: Mesh):
    kw = {} if prog.out_shardings is None else {"out_shardings": prog.out_shardings}
    with use_mesh_rules(mesh, prog.rules):
        lowered = jax.jit(prog.fn, donate_argnums=prog.donate, **kw).lower(*prog.args)
    return lowered.compile()


_OOM = re.compile(
    r"RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm|RESOURCE_EXHAUSTED: Ran out of memory on HBM"
)
_REQUIRED = re.compile(r"total memory required for HLO temporaries \(([\d.]+)G\)")


def _compile_or_oom(prog: Program, mesh: Mesh):
    """The compiled program, or the TPU compiler's out-of-memory message: a program whose buffers cannot
    fit in HBM is refused at compile time, which is the plan's answer (fits: false), not a tool error.
    Every other compile error propagates."""
    try:
        return _compile(prog, mesh)
    except jax.errors.JaxRuntimeError as e:
        if not _OOM.search(str(e)):
            raise
        return str(e).strip().splitlines()[0]


def _does_not_fit(message: str, part, target, kind, n_dev, mesh, prog: Program, chip, seconds: float) -> dict:
    m = _REQUIRED.search(message)
    temp = int(float(m.group(1)) * 2**30) if m else None  # the compiler prints GiB with a "G"
    return dict(
        part=part, target=resolve_topology(target), device_kind=kind, devices=n_dev, mesh=dict(mesh.shape),
        attention_kernel=prog.attention_kernel, **prog.notes, argument_bytes=None, output_bytes=None,
        temp_bytes=temp, alias_bytes=None, peak_bytes_per_device=None, hbm_bytes_per_device=chip.hbm_bytes,
        fits=False, headroom_bytes=None, compile_error=message, collectives={}, model_flops=prog.model_flops,
        estimated_step_seconds=None, estimated_video_seconds=None, calls_per_video=prog.calls_per_video,
        compile_seconds=round(seconds, 1), estimate_basis="not estimated: the TPU compiler refused the program (HBM)",
    )  # fmt: skip


def _read(compiled) -> dict:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    text = compiled.as_text()
    return dict(
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        generated_code_bytes=int(mem.generated_code_size_in_bytes),
        xla_seconds=xla_optimal_seconds(cost, text),
        xla_flops=float(cost.get("flops", 0.0)),
        collectives=hlo_collectives(text),
        mosaic_kernels=mosaic_kernel_count(text),
    )


def _extrapolate(a: float, b: float, n: int) -> float:
    return a + (n - 1) * (b - a)


def plan_part(
    target: str,
    mesh: str | MeshConfig | Mesh,
    part: str,
    *,
    sizes: PlanSizes | None = None,
    config: Any = None,
    kernel_efficiency: float = KERNEL_EFFICIENCY,
    extrapolate: bool | str = True,
) -> dict:
    """Compiles one part for a TPU topology (deviceless) and returns its per-device report (see the
    module docstring; every ``estimated_*`` figure is an estimate). ``extrapolate``: False skips the
    extra compiles of a layer stack's estimate (0 layers for a scanned stack, else 1 and 2 unrolled;
    no time estimate then), "if_fits" runs them only when the part fits in HBM."""
    sizes = sizes or PlanSizes()
    if part not in PARTS:
        raise ValueError(f"unknown plan part {part!r}; expected one of {', '.join(PARTS)}")
    if not 0 < kernel_efficiency <= 1:
        raise ValueError(f"kernel_efficiency must be in (0, 1]; got {kernel_efficiency}")
    mesh = mesh if isinstance(mesh, Mesh) else mesh_for(target, mesh)
    n_dev = mesh.devices.size
    kind = mesh.devices.flat[0].device_kind
    chip = chip_spec(kind)
    build = PARTS[part]
    t0 = time.time()
    prog = build(mesh, sizes, config, None)
    compiled = _compile_or_oom(prog, mesh)
    if isinstance(compiled, str):  # the compiler's verdict: the program cannot fit in this chip's HBM
        return _does_not_fit(compiled, part, target, kind, n_dev, mesh, prog, chip, time.time() - t0)
    main = _read(compiled)
    out: dict = dict(
        part=part, target=resolve_topology(target), device_kind=kind, devices=n_dev, mesh=dict(mesh.shape),
        attention_kernel=prog.attention_kernel, **prog.notes,
        argument_bytes=main["argument_bytes"], output_bytes=main["output_bytes"], temp_bytes=main["temp_bytes"],
        alias_bytes=main["alias_bytes"],
    )  # fmt: skip
    peak = main["argument_bytes"] + main["output_bytes"] + main["temp_bytes"] - main["alias_bytes"]
    out.update(
        peak_bytes_per_device=peak, hbm_bytes_per_device=chip.hbm_bytes, fits=peak <= chip.hbm_bytes,
        headroom_bytes=chip.hbm_bytes - peak, mosaic_kernels_in_hlo=main["mosaic_kernels"],
        collectives_in_hlo=main["collectives"], compile_seconds=round(time.time() - t0, 1),
    )  # fmt: skip
    if extrapolate == "if_fits":
        extrapolate = out["fits"]
    if prog.layers and not extrapolate:
        out.update(collectives=main["collectives"], model_flops=prog.model_flops, estimated_step_seconds=None,
                   estimated_video_seconds=None, calls_per_video=prog.calls_per_video,
                   estimate_basis="not estimated (needs the extrapolation compiles)")  # fmt: skip
        return out
    if prog.layers:
        # The cost model prices a loop body once. A scanned stack: the compiled program is the
        # non-layer ops + one layer, so a 0-layer compile (no attention kernels: seconds) separates
        # them: s0 + L (s_scan - s0). Otherwise unrolled 1- and 2-layer compiles: s1 + (L - 1)(s2 - s1).
        # The two agree within 2.4 % at small width (6 layers, v5e:2x2; docs/scaling.md).
        t1 = time.time()
        L = prog.layers
        if prog.scanned:
            zero = _read(_compile(build(mesh, sizes, config, 0), mesh))
            pts, n_of = (zero, main), (lambda a, b: a + L * (b - a))
            basis = f"the scanned program (layer body priced once) and a 0-layer compile: s0 + {L} (s_scan - s0)"
        else:
            pts = tuple(_read(_compile(build(mesh, sizes, config, n), mesh)) for n in (1, 2))
            n_of = lambda a, b: _extrapolate(a, b, L)
            basis = f"unrolled 1- and 2-layer compiles extrapolated to {L} layers"
        first, second = pts
        xla_s = n_of(first["xla_seconds"], second["xla_seconds"])
        xla_flops = n_of(first["xla_flops"], second["xla_flops"])
        coll = {}
        for k in sorted(set(first["collectives"]) | set(second["collectives"])):
            a, b = (
                first["collectives"].get(k, {"count": 0, "bytes": 0}),
                second["collectives"].get(k, {"count": 0, "bytes": 0}),
            )
            coll[k] = {f: int(round(n_of(a[f], b[f]))) for f in ("count", "bytes")}
        out["extrapolation_compile_seconds"] = round(time.time() - t1, 1)
        out["estimate_basis"] = basis
    else:
        xla_s, xla_flops, coll = main["xla_seconds"], main["xla_flops"], main["collectives"]
        out["estimate_basis"] = "the compiled program's cost (loop bodies counted once)"
    pallas_s = prog.pallas_flops_per_device / (chip.peak_bf16_flops * kernel_efficiency)
    step_s = xla_s + pallas_s
    out.update(
        collectives=coll,
        model_flops=prog.model_flops,
        xla_flops_per_device=xla_flops,
        pallas_flops_per_device=prog.pallas_flops_per_device,
        estimated_xla_seconds=xla_s,
        estimated_pallas_seconds=pallas_s,
        kernel_efficiency=kernel_efficiency,
        estimated_step_seconds=step_s,
        estimated_mfu=prog.model_flops / (n_dev * chip.peak_bf16_flops * step_s) if step_s > 0 and prog.model_flops else None,
        calls_per_video=prog.calls_per_video,
        estimated_video_seconds=step_s * prog.calls_per_video if prog.calls_per_video else None,
        chip=dataclasses.asdict(chip),
        estimate_note=(
            "ESTIMATE: TPU cost-model optimal_seconds for the XLA ops + Pallas kernel FLOPs at "
            f"{kernel_efficiency:.0%} of the chip's bf16 peak; host/launch overheads and unhidden collective "
            "latency are not modelled"
        ),
    )  # fmt: skip
    return out


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


# --------------------------------------------------------------------------------- pipeline, search
PIPELINE_ORDER = ("llm", "clip", "sample", "vae")


def pipeline_summary(parts: dict) -> dict | None:
    """Per video on one mesh: text encoding (Step-LLM + CLIP), 50 DiT steps, the VAE decode; the
    estimated seconds of each stage and which stage bounds the peak HBM."""
    stages = [p for p in PIPELINE_ORDER if p in parts]
    if not stages or "sample" not in stages:
        return None
    rows = {}
    for p in stages:
        r = parts[p]
        calls = r["calls_per_video"] or 1
        step = r["estimated_step_seconds"]
        rows[p] = dict(calls=calls, peak_bytes_per_device=r["peak_bytes_per_device"], fits=r["fits"],
                       estimated_seconds=None if step is None else step * calls)  # fmt: skip
    # A stage the compiler refused (no peak: it needs more than the HBM) bounds the peak.
    peak_stage = max(
        rows, key=lambda p: (rows[p]["peak_bytes_per_device"] is None, rows[p]["peak_bytes_per_device"] or 0)
    )
    secs = [r["estimated_seconds"] for r in rows.values()]
    return dict(
        stages=rows, estimated_video_seconds=None if None in secs else sum(secs),
        peak_stage=peak_stage, peak_bytes_per_device=rows[peak_stage]["peak_bytes_per_device"],
        fits=all(r["fits"] for r in rows.values()), covers=list(stages),
        note="ESTIMATE; each stage compiled as its own program on the same mesh (weights of the other stages "
             "not resident); host/launch overheads not modelled",
    )  # fmt: skip


def candidate_meshes(n_devices: int, *, batch: int = 2, heads: int = 48, max_tensor: int = 8) -> list[MeshConfig]:
    """Data / fsdp / sequence / tensor splits of ``n_devices`` that divide the shapes: ``data`` the
    CFG batch, ``tensor`` the heads; the rest goes to ``fsdp`` or to ``sequence``."""
    out = []
    for data in (d for d in range(1, batch + 1) if batch % d == 0 and n_devices % d == 0):
        for tensor in (
            t for t in (1, 2, 4, 8, 16) if t <= max_tensor and heads % t == 0 and n_devices % (data * t) == 0
        ):
            rest = n_devices // (data * tensor)
            for fsdp, seq in {(rest, 1), (1, rest)}:
                out.append(MeshConfig(data=data, fsdp=fsdp, sequence=seq, tensor=tensor))
    return out


def _weight_bytes_per_device(prog: Program, mesh: Mesh) -> int:
    """Bytes of the weight arguments (weights / train state, a frozen base) one device holds, from
    their shardings."""
    total = 0
    for a in jax.tree.leaves([prog.args[i] for i in prog.weight_args]):
        shard = a.sharding.shard_shape(a.shape)
        total += math.prod(shard) * a.dtype.itemsize
    return total


def search(
    target: str,
    *,
    part: str = "sample",
    sizes: PlanSizes | None = None,
    config: Any = None,
    kernel_efficiency: float = KERNEL_EFFICIENCY,
    log=print,
    on_row=None,
) -> list[dict]:
    """Compiles ``part`` on every candidate mesh of the topology; the ones that fit get the
    extrapolation compiles for the time estimate. A mesh whose sharded weights alone exceed the
    chip's HBM is not compiled (reported with those bytes). Rows ranked by estimated seconds per
    video (or per step), those that do not fit last; ``on_row(rows)`` after each candidate."""
    sizes = sizes or PlanSizes()
    devices = topology_devices(target)
    hbm = chip_spec(devices[0].device_kind).hbm_bytes
    rows = []
    for mc in candidate_meshes(len(devices)):
        spec = ",".join(f"{k}={v}" for k, v in zip(("data", "fsdp", "sequence", "tensor"), mc.ici_sizes(len(devices))))
        mesh = make_mesh(mc, devices)
        weights = _weight_bytes_per_device(PARTS[part](mesh, sizes, config, None), mesh)
        if weights > hbm:
            r = dict(mesh_spec=spec, mesh=dict(mesh.shape), fits=False, peak_bytes_per_device=None, weight_bytes_per_device=weights,
                     collectives={}, estimated_step_seconds=None, estimated_video_seconds=None,
                     note="not compiled: the sharded weights alone exceed the chip's HBM")  # fmt: skip
            log(f"  {spec:<40} weights {weights / 2**30:7.2f} GiB per chip > HBM: not compiled")
            rows.append(r)
            if on_row:
                on_row(rows)
            continue
        r = plan_part(target, mesh, part, sizes=sizes, config=config, kernel_efficiency=kernel_efficiency,
                      extrapolate="if_fits")  # fmt: skip
        r["mesh_spec"] = spec
        r["weight_bytes_per_device"] = weights
        log(f"  {spec:<40} peak {r['peak_bytes_per_device'] / 2**30:7.2f} GiB  fits {r['fits']}"
            + (f"  est. {r['estimated_step_seconds']:.3f} s/step" if r["fits"] else ""))  # fmt: skip
        rows.append(r)
        if on_row:
            on_row(rows)
    key = lambda r: (not r["fits"], (r["estimated_video_seconds"] or r["estimated_step_seconds"]) if r["fits"] else 0)
    return sorted(rows, key=key)


def _gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def _secs(x) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _coll(c: dict) -> str:
    return ", ".join(f"{k} {v['count']} ({v['bytes'] / 2**30:.2f} GiB)" for k, v in c.items()) or "none"


def format_parts(report: dict) -> str:
    """The per-part table of a ``--target`` report (estimates marked as such)."""
    lines = [
        f"target {report['target']} ({report.get('device_kind')}, {report.get('devices')} chips)  mesh {report.get('mesh')}"
    ]
    lines.append(f"{'part':<7}{'kernel':>8}{'args':>8}{'out':>7}{'temp':>8}{'peak':>8}{'HBM':>7}{'fits':>6}"
                 f"{'est. s/step':>12}{'est. s/video':>13}{'est. MFU':>9}  (GiB per chip)")  # fmt: skip
    for name, r in report["parts"].items():
        mfu = r.get("estimated_mfu")
        lines.append(
            f"{name:<7}{r['attention_kernel']:>8}{_gib(r['argument_bytes']):>8}{_gib(r['output_bytes']):>7}"
            f"{_gib(r['temp_bytes']):>8}{_gib(r['peak_bytes_per_device']):>8}{_gib(r['hbm_bytes_per_device']):>7}"
            f"{('yes' if r['fits'] else 'NO'):>6}{_secs(r['estimated_step_seconds']):>12}"
            f"{_secs(r['estimated_video_seconds']):>13}{('-' if mfu is None else f'{mfu:.0%}'):>9}"
        )
    for name, r in report["parts"].items():
        if "compile_error" in r:
            lines.append(f"{name} does not fit: {r['compile_error']}")
            continue
        lines.append(
            f"{name} collectives per step: {_coll(r['collectives'])}; Mosaic kernels in HLO: {r['mosaic_kernels_in_hlo']}"
        )
    for name, r in report["parts"].items():
        if "lora_rank" in r:
            lines.append(
                f"{name}: LoRA rank {r['lora_rank']}, {r['trainable_params']:,} of {r['total_params']:,} parameters "
                f"trainable ({r['trainable_fraction']:.2%}); optimizer state {_gib(r['optimizer_state_bytes'])} GiB, "
                f"frozen base {_gib(r['frozen_base_bytes'])} GiB (quantize {r['quantize']}), all chips together"
            )
    pipe = report.get("pipeline")
    if pipe:
        stages = ", ".join(f"{k} {_secs(v['estimated_seconds'])} s" for k, v in pipe["stages"].items())
        lines.append(f"pipeline per video (ESTIMATE): {stages}; total {_secs(pipe['estimated_video_seconds'])} s; "
                     f"peak {_gib(pipe['peak_bytes_per_device'])} GiB in {pipe['peak_stage']}; fits {pipe['fits']}")  # fmt: skip
    lines.append("estimates: TPU cost model (XLA ops) + Pallas FLOPs at the stated kernel efficiency; "
                 "host/launch overheads not modelled")  # fmt: skip
    return "\n".join(lines)


def format_search(rows: list[dict]) -> str:
    """The ranked mesh table of ``--search``."""
    lines = [
        f"{'rank':<5}{'mesh':<40}{'peak GiB':>9}{'fits':>6}{'est. s/step':>12}{'est. s/video':>13}  all-to-all / all-gather per step"
    ]
    for i, r in enumerate(rows, 1):
        c = r["collectives"]
        cc = f"{c.get('all-to-all', {}).get('count', 0)} / {c.get('all-gather', {}).get('count', 0)}"
        lines.append(f"{i:<5}{r['mesh_spec']:<40}{_gib(r['peak_bytes_per_device']):>9}{('yes' if r['fits'] else 'NO'):>6}"
                     f"{_secs(r['estimated_step_seconds']):>12}{_secs(r['estimated_video_seconds']):>13}  {cc}")  # fmt: skip
    return "\n".join(lines)
