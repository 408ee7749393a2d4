"""AOT plan: lower and compile, on N simulated CPU devices with abstract inputs, one sampling step of
the DiT (CFG batch 2), one training step and the Step-LLM prompt encoding, and print per-device
memory (``memory_analysis()``) and FLOPs.

    python -m stepvideo_jax.tools.plan --config=configs/ti2v.py --devices=8 --mesh=fsdp=8
    python -m stepvideo_jax.tools.plan --devices=1 --parts=sample,llm --quantize=int8 --noflops

``--parts`` may also name ``clip`` and ``vae`` (the TPU plan's programs, compiled for the CPU mesh);
``--quantize`` makes the DiT's and Step-LLM's linears weight-only int8 / fp8.

With ``--target=TOPOLOGY`` (``v5p:2x2x1``, ``v6e:2x4``, or a slice name such as ``v5p-8``) the parts
are compiled deviceless by the TPU compiler (libtpu) instead: see ``tools.tpu_plan`` (per-part HBM
and fit, collectives, Mosaic kernels, estimated step and video seconds), and ``--search`` ranks the
candidate meshes of the topology:

    python -m stepvideo_jax.tools.plan --target=v5p:2x2x1 --mesh=fsdp=4 --parts=sample --json=plan.json
    python -m stepvideo_jax.tools.plan --target=v6e:2x4 --search

Nothing is allocated: parameters and inputs are ``ShapeDtypeStruct``s with their shardings. FLOPs:
XLA's ``cost_analysis()`` counts a loop body once, so the FLOPs come from two small unrolled
compiles (1 and 2 layers, ``xla`` attention) of the same sharded program, extrapolated to the full
depth (per-device, as partitioned, so replicated work is counted); the model FLOPs (matmuls only,
attention included) are printed beside them.

``--devices`` must be set before jax starts: this module sets ``XLA_FLAGS`` itself when run as a
program.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
import types

from absl import flags


def _set_device_count(argv: list[str]) -> None:
    n = None
    for i, a in enumerate(argv):
        if a.startswith("--devices="):
            n = a.split("=", 1)[1]
        elif a == "--devices" and i + 1 < len(argv):
            n = argv[i + 1]
    if n is not None:  # read when the CPU backend starts (first device query), not at import
        flags = os.environ.get("XLA_FLAGS", "")
        flags = " ".join(f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count"))
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(n)}".strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


if __name__ == "__main__":
    _set_device_count(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from stepvideo_jax.configs import resolve_config_arg  # noqa: E402
from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT  # noqa: E402
from stepvideo_jax.files import write_json_atomic  # noqa: E402
from stepvideo_jax.sharding import MeshConfig, logical_to_spec, make_mesh, model_shardings, use_mesh_rules  # noqa: E402
from stepvideo_jax.text import TEXT_SHARDING  # noqa: E402

__all__ = ["PlanSizes", "plan", "main"]

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class PlanSizes:
    """Video and text sizes of the planned run (the release's defaults)."""

    frames: int = 102
    height: int = 544
    width: int = 992
    llm_tokens: int = 320
    clip_tokens: int = 77
    cfg_batch: int = 2
    train_batch: int = 2

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.frames // 17 * 3, self.height // 16, self.width // 16)


def _load_config(value: str):
    """A --config value (a packaged name such as ``ti2v`` or ``train_ti2v:lora``, or ``FILE[:ARG]``) -> ConfigDict."""
    path, _, arg = resolve_config_arg(value).partition(":")
    spec = importlib.util.spec_from_file_location("_plan_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--config {path!r} is not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _abstract(model_cfg_make, mesh, rules):
    abstract = nnx.eval_shape(model_cfg_make)
    graphdef, state = nnx.split(abstract)
    shardings = model_shardings(state, mesh, rules)
    sds = jax.tree.map(
        lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
        nnx.to_pure_dict(state),
        nnx.to_pure_dict(shardings),
    )
    return graphdef, state, sds


def _input(shape, dtype, mesh, names, rules):
    spec = logical_to_spec(names, rules, shape=shape, mesh=mesh)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def _dit_inputs(cfg: DiTConfig, sizes: PlanSizes, batch: int, mesh):
    f, h, w = sizes.latent_shape
    dt = cfg.jnp_dtype
    r = DIT_SHARDING
    lat = _input((batch, f, h, w, cfg.in_channels), dt, mesh, ("batch", None, None, None, None), r)
    return dict(
        latents=lat,
        timestep=_input((batch,), jnp.float32, mesh, ("batch",), r),
        llm_states=_input((batch, sizes.llm_tokens, cfg.caption_channels[0]), dt, mesh, ("batch", None, None), r),
        text_mask=_input((batch, sizes.clip_tokens + sizes.llm_tokens), jnp.int32, mesh, ("batch", None), r),
        clip_states=_input((batch, sizes.clip_tokens, cfg.caption_channels[1]), dt, mesh, ("batch", None, None), r),
        condition=lat,
        motion_score=jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec())),
    )


def _sample_step_fn(graphdef, state_template, cfg_scale: float = 9.0):
    def step(params, latents, timestep, llm_states, text_mask, clip_states, condition, motion_score, dt):
        state = nnx.replace_by_pure_dict(state_template, params) or state_template
        model = nnx.merge(graphdef, state)
        # One Euler step with CFG: rows [cond, uncond] share the latents.
        v = model.forward(latents, timestep, llm_states, text_mask, clip_states, condition, motion_score)
        v = v.astype(jnp.float32)
        guided = v[1:] + cfg_scale * (v[:1] - v[1:])
        x = latents[:1].astype(jnp.float32) + guided * dt
        return jnp.concatenate([x, x], axis=0).astype(latents.dtype)

    return step


def _train_step_fn(graphdef, state_template, tx):
    def step(params, opt_state, latents, timestep, llm_states, text_mask, clip_states, condition, motion_score):
        def loss_fn(p):
            state = nnx.replace_by_pure_dict(state_template, p) or state_template
            model = nnx.merge(graphdef, state)
            noise = jnp.zeros_like(latents)  # shapes only: the plan needs no real noise
            t = timestep[:, None, None, None, None].astype(latents.dtype)
            x_t = t * latents + (1 - t) * noise
            v = model.forward(x_t, timestep, llm_states, text_mask, clip_states, condition, motion_score)
            return jnp.mean(jnp.square(v.astype(jnp.float32) - (latents - noise).astype(jnp.float32)))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _stats(compiled) -> dict:
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        alias_bytes=int(getattr(mem, "alias_size_in_bytes", 0)),
        xla_flops_loop_bodies_once=float(cost.get("flops", 0.0)) if cost else 0.0,
    )


def _peak(s: dict) -> int:
    return s["argument_bytes"] + s["output_bytes"] + s["temp_bytes"] - s["alias_bytes"]


def _dit_model_flops(cfg: DiTConfig, sizes: PlanSizes, batch: int, *, train: bool) -> float:
    """Matmul FLOPs of one DiT forward (x3 for forward + backward): projections, FFN, attention."""
    f, h, w = sizes.latent_shape
    n, m, d, L = f * h * w, sizes.clip_tokens + sizes.llm_tokens, cfg.hidden_size, cfg.num_layers
    per_layer = (
        2 * n * d * 3 * d + 2 * n * d * d  # self-attn qkv + out
        + 2 * 2 * n * n * d  # self-attn logits + values
        + 2 * n * d * d + 2 * m * d * 2 * d + 2 * n * d * d + 2 * 2 * n * m * d  # cross-attn
        + 2 * 2 * n * d * cfg.ffn_mult * d  # FFN
    )  # fmt: skip
    fwd = batch * L * per_layer
    return 3 * fwd if train else fwd


def _compile(fn, args, mesh, rules, donate=()):
    with use_mesh_rules(mesh, rules):
        lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
    return lowered.compile()


def plan(
    dit_cfg: DiTConfig,
    mesh_cfg: MeshConfig,
    sizes: PlanSizes = PlanSizes(),
    *,
    what: tuple[str, ...] = ("sample", "train", "llm"),
    train_cfg: DiTConfig | None = None,
    llm_cfg=None,
    flops: bool = True,
    quantize: str = "none",
    part_configs: dict | None = None,
) -> dict:
    """`quantize` ("int8" / "fp8"): weight-only quantized DiT (sample) and Step-LLM (llm) linears;
    `part_configs` overrides the clip / vae parts' configs (``tools.tpu_plan``'s builders, here on
    the CPU mesh; default: the release's, bf16)."""
    mesh = make_mesh(mesh_cfg)
    report: dict = {"devices": len(jax.devices()), "mesh": dict(mesh.shape), "sizes": dataclasses.asdict(sizes)}
    if quantize != "none":
        if "train" in what:
            raise ValueError("quantize applies to the sample and llm parts (training keeps float weights)")
        from stepvideo_jax.text import StepLLMConfig

        dit_cfg = dataclasses.replace(dit_cfg, quantize=quantize)
        llm_cfg = dataclasses.replace(
            llm_cfg or StepLLMConfig(param_dtype="bfloat16", dtype="bfloat16"), quantize=quantize
        )
        report["quantize"] = quantize

    def dit_program(cfg: DiTConfig, kind: str):
        graphdef, state, params = _abstract(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), mesh, DIT_SHARDING)
        if kind == "sample":
            inputs = _dit_inputs(cfg, sizes, sizes.cfg_batch, mesh)
            dt = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
            return _sample_step_fn(graphdef, state), (params, *inputs.values(), dt), ()
        tx = optax.adamw(1e-5, b1=0.9, b2=0.95)
        opt = jax.eval_shape(tx.init, params)
        pshard = jax.tree.map(lambda s: s.sharding, params)
        opt_shard = optax.tree_map_params(
            tx, lambda _, s: s, opt, pshard, transform_non_params=lambda _: NamedSharding(mesh, PartitionSpec())
        )
        opt = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), opt, opt_shard)
        inputs = _dit_inputs(cfg, sizes, sizes.train_batch, mesh)
        return _train_step_fn(graphdef, state, tx), (params, opt, *inputs.values()), (0, 1)

    def per_device_flops(cfg: DiTConfig, kind: str) -> float:
        # Unrolled 1- and 2-layer programs without attention loops; per layer = difference.
        small = [dataclasses.replace(cfg, num_layers=n, scan_layers=False, attention_kernel="xla") for n in (1, 2)]
        f1, f2 = (
            _stats(_compile(*dit_program(c, kind)[:2], mesh, DIT_SHARDING))["xla_flops_loop_bodies_once"] for c in small
        )
        return f1 + (cfg.num_layers - 1) * (f2 - f1)

    for kind in what:
        t0 = time.time()
        if kind in ("sample", "train"):
            cfg = dit_cfg if kind == "sample" else (train_cfg or dit_cfg)
            fn, args, donate = dit_program(cfg, kind)
            stats = _stats(_compile(fn, args, mesh, DIT_SHARDING, donate))
            batch = sizes.cfg_batch if kind == "sample" else sizes.train_batch
            stats["model_flops_total"] = _dit_model_flops(cfg, sizes, batch, train=kind == "train")
            if flops:
                stats["flops_per_device"] = per_device_flops(cfg, kind)
        elif kind == "llm":
            from stepvideo_jax.text import StepLLM, StepLLMConfig

            cfg = llm_cfg or StepLLMConfig(param_dtype="bfloat16", dtype="bfloat16")
            graphdef, state, params = _abstract(lambda cfg=cfg: StepLLM(cfg, rngs=nnx.Rngs(0)), mesh, TEXT_SHARDING)
            ids = _input((sizes.cfg_batch, sizes.llm_tokens), jnp.int32, mesh, ("batch", None), TEXT_SHARDING)

            def encode(params, ids, graphdef=graphdef, state=state):
                state_ = nnx.replace_by_pure_dict(state, params) or state
                return nnx.merge(graphdef, state_)(ids, jnp.ones_like(ids))

            stats = _stats(_compile(encode, (params, ids), mesh, TEXT_SHARDING))
            n_params = sum(x.size for x in jax.tree.leaves(params))
            stats["model_flops_total"] = 2.0 * n_params * sizes.cfg_batch * sizes.llm_tokens
        elif kind in ("clip", "vae"):  # the TPU plan's builders, compiled for the CPU mesh
            from stepvideo_jax.tools.tpu_plan import PARTS

            prog = PARTS[kind](mesh, sizes, (part_configs or {}).get(kind), None)
            stats = _stats(_compile(prog.fn, prog.args, mesh, prog.rules, prog.donate))
            stats["model_flops_total"] = prog.model_flops
        else:
            raise ValueError(f"unknown plan part {kind!r}; expected sample, train, llm, clip or vae")
        stats["peak_bytes"] = _peak(stats)
        stats["compile_seconds"] = round(time.time() - t0, 1)
        report[kind] = stats
    return report


def _dit_config_from(config, *, train: bool) -> DiTConfig:
    if config is None:
        return DiTConfig(
            param_dtype="float32" if train else "bfloat16", dtype="bfloat16",
            remat_policy="full" if train else "none", attention_kernel="chunked",
        )  # fmt: skip
    if "model" in config:  # a training config: DiTConfig fields under `model`
        fields = dict(config.model)
        fields["caption_channels"] = tuple(fields["caption_channels"])
        fields["rope_split"] = tuple(fields["rope_split"])
        fields["attention_kernel"] = "chunked"
        return DiTConfig(**fields)
    # A sampling config: the released 30B DiT (or its tiny variant) in the config's dtype.
    variant = config.get("variant", "release")
    dtype = config.get("dit_dtype", "bfloat16")
    param_dtype = "float32" if train else (config.get("param_dtype") or dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype, attention_kernel="chunked",
              remat_policy="full" if train else "none",
              use_additional_conditions=bool(config.get("use_additional_conditions", True)))  # fmt: skip
    if variant == "tiny":
        t = config.tiny
        kw.update(num_heads=t.dit_heads, head_dim=t.dit_head_dim, num_layers=t.dit_layers, in_channels=t.z_channels,
                  out_channels=t.z_channels, caption_channels=(64, 32),
                  rope_split=(t.dit_head_dim // 2, t.dit_head_dim // 4, t.dit_head_dim // 4))  # fmt: skip
    return DiTConfig(**kw)


def _fmt_gib(b: float) -> str:
    return f"{b / GiB:8.2f}"


def format_report(r: dict) -> str:
    lines = [f"devices {r['devices']}  mesh {r['mesh']}  sizes {r['sizes']}"]
    lines.append(
        f"{'part':<8}{'args GiB':>10}{'out GiB':>10}{'temp GiB':>10}{'peak GiB':>10}{'TFLOP/dev':>11}{'model TFLOP':>13}"
    )
    for kind in ("sample", "train", "llm", "clip", "vae"):
        if kind not in r:
            continue
        s = r[kind]
        fl = s.get("flops_per_device")
        lines.append(
            f"{kind:<8}{_fmt_gib(s['argument_bytes']):>10}{_fmt_gib(s['output_bytes']):>10}{_fmt_gib(s['temp_bytes']):>10}"
            f"{_fmt_gib(s['peak_bytes']):>10}{(f'{fl / 1e12:.1f}' if fl else '-'):>11}{s['model_flops_total'] / 1e12:>13.1f}"
        )
    return "\n".join(lines)


# Flags live on their own FlagValues, so `main(argv)` parses a list (tests) as the command line does.
_FLAGS = flags.FlagValues()
flags.DEFINE_string("config", "", "sampling or training config: NAME[:VARIANT] (ti2v, train_ti2v:lora, ...) or FILE; "
                    "default: the 30B release", flag_values=_FLAGS)  # fmt: skip
flags.DEFINE_integer("devices", None, "simulated CPU devices (set before jax starts)", flag_values=_FLAGS)
flags.DEFINE_string("mesh", "fsdp=-1", "MeshConfig spec, e.g. 'fsdp=2,tensor=4'", flag_values=_FLAGS)
flags.DEFINE_string("parts", None, "comma-separated: sample, train, llm, clip, vae; default sample,train,llm "
                    "(with --target: sample,llm,clip,vae)", flag_values=_FLAGS)  # fmt: skip
flags.DEFINE_integer("frames", None, "video frames (default: the release's 102)", flag_values=_FLAGS)
flags.DEFINE_integer("height", None, "video height (default 544)", flag_values=_FLAGS)
flags.DEFINE_integer("width", None, "video width (default 992)", flag_values=_FLAGS)
flags.DEFINE_integer("llm_layers", None, "shrink the Step-LLM (smoke tests)", flag_values=_FLAGS)
flags.DEFINE_bool("flops", True, "the extra unrolled compiles for FLOPs (--noflops skips them)", flag_values=_FLAGS)
flags.DEFINE_string("json", "", "also write the report as JSON here", flag_values=_FLAGS)
flags.DEFINE_string("target", "", "TPU topology (v5e:2x4, v5p:2x2x1, ...) or slice name (v5p-8): compile deviceless "
                    "with libtpu's TPU compiler instead of simulated CPU devices", flag_values=_FLAGS)  # fmt: skip
flags.DEFINE_string(
    "vae_tile",
    "",
    "with --target: decode the vae part in spatial tiles of TH,TW latent pixels "
    "(e.g. 16,16) where the whole chunk does not fit",
    flag_values=_FLAGS,
)
flags.DEFINE_bool("search", False, "with --target: compile the candidate meshes, rank them", flag_values=_FLAGS)
flags.DEFINE_float("kernel_efficiency", None, "with --target: assumed splash efficiency", flag_values=_FLAGS)
flags.DEFINE_enum("quantize", "none", ["none", "int8", "fp8"], "weight-only quantized DiT (sample), Step-LLM (llm) "
                  "linears, as `convert_torch_weights.py --quantize` stores them, and with --target the frozen base "
                  "of a LoRA training config (train: QLoRA)", flag_values=_FLAGS)  # fmt: skip
# The spellings of the argparse version of this tool keep working.
_RENAMED = {"--llm-layers": "--llm_layers", "--no-flops": "--noflops", "--kernel-efficiency": "--kernel_efficiency"}


def _parse(argv: list[str]):
    argv = [_RENAMED.get(x.split("=", 1)[0], x.split("=", 1)[0]) + (x[len(x.split("=", 1)[0]) :]) for x in argv]
    _FLAGS.unparse_flags()  # every call starts from the defaults
    try:
        rest = _FLAGS(["plan", *argv])
    except flags.Error as e:
        raise SystemExit(f"error: {e}") from None
    if len(rest) > 1:
        raise SystemExit(f"error: unexpected arguments {rest[1:]}")
    f = _FLAGS
    return types.SimpleNamespace(
        config=f.config, devices=f.devices, mesh=f.mesh, parts=f.parts, frames=f.frames, height=f.height,
        width=f.width, llm_layers=f.llm_layers, no_flops=not f.flops, json=f.json, target=f.target,
        search=f.search, kernel_efficiency=f.kernel_efficiency, quantize=f.quantize, vae_tile=_tile(f.vae_tile),
    )  # fmt: skip


def _tile(value: str) -> tuple[int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 4 for p in parts):
        raise SystemExit(f"error: --vae_tile must be TH,TW latent pixels, each > 4 (the tile overlap); got {value!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> int:
    a = _parse(sys.argv[1:] if argv is None else list(argv))
    if a.target:
        return _main_target(a)
    if a.search:
        raise SystemExit("--search needs --target (a TPU topology such as v6e:2x4)")
    if a.vae_tile:
        raise SystemExit("--vae_tile needs --target (a TPU topology such as v5e:2x2)")
    if a.devices is not None and len(jax.devices()) != a.devices:
        raise SystemExit(
            f"--devices={a.devices} but jax sees {len(jax.devices())} devices (jax started before the flag was read)"
        )
    config = _load_config(a.config) if a.config else None
    sizes = PlanSizes()
    if config is not None and "frames" in config:
        sizes = dataclasses.replace(sizes, frames=config.frames, height=config.height, width=config.width)
    sizes = dataclasses.replace(
        sizes, **{k: v for k, v in dict(frames=a.frames, height=a.height, width=a.width).items() if v is not None}
    )
    llm_cfg = None
    if a.llm_layers is not None:
        from stepvideo_jax.text import StepLLMConfig

        llm_cfg = StepLLMConfig(num_layers=a.llm_layers, hidden_size=256, num_heads=4, num_groups=2,
                                ffn_hidden_size=512, vocab_size=1024, param_dtype="bfloat16", dtype="bfloat16")  # fmt: skip
    parts = tuple(x.strip() for x in (a.parts or "sample,train,llm").split(",") if x.strip())
    unknown = [x for x in parts if x not in ("sample", "train", "llm", "clip", "vae")]
    if unknown:
        raise SystemExit(f"--parts {unknown} unknown; expected some of sample, train, llm, clip, vae")
    if a.quantize != "none" and "train" in parts:
        raise SystemExit("--quantize applies to the sample and llm parts; leave train out of --parts")
    report = plan(
        _dit_config_from(config, train=False), MeshConfig.parse(a.mesh), sizes, what=parts,
        train_cfg=_dit_config_from(config, train=True), llm_cfg=llm_cfg, flops=not a.no_flops, quantize=a.quantize,
    )  # fmt: skip
    print(format_report(report))
    if a.json:
        _write_json(a.json, report)
    return 0


def _write_json(path: str, report: dict) -> None:
    write_json_atomic(path, report, indent=1)


def _main_target(a) -> int:
    """--target: every part compiled for the TPU topology by libtpu (``tools.tpu_plan``)."""
    from stepvideo_jax.tools import tpu_plan
    from stepvideo_jax.tools.tpu_target import resolve_topology

    try:
        target = resolve_topology(a.target)  # bad names fail here, before any compile
    except ValueError as e:
        raise SystemExit(str(e)) from None
    parts = tuple(x.strip() for x in (a.parts or "sample,llm,clip,vae").split(",") if x.strip())
    unknown = [x for x in parts if x not in tpu_plan.PARTS]
    if unknown:
        raise SystemExit(f"--parts {unknown} unknown; expected some of {', '.join(tpu_plan.PARTS)}")
    if a.devices is not None or a.llm_layers is not None:
        raise SystemExit("--devices and --llm-layers are for the simulated-CPU mode, not --target")
    if a.vae_tile and "vae" not in parts:
        raise SystemExit("--vae_tile applies to the vae part; add vae to --parts")
    sizes = PlanSizes()
    sizes = dataclasses.replace(
        sizes, **{k: v for k, v in dict(frames=a.frames, height=a.height, width=a.width).items() if v is not None}
    )
    kw = dict(sizes=sizes)
    if a.kernel_efficiency is not None:
        kw["kernel_efficiency"] = a.kernel_efficiency
    config = _load_config(a.config) if a.config else None
    if a.search:

        def partial(rows):  # the rows so far, in case the search is stopped
            if a.json:
                _write_json(a.json, tpu_plan.jsonable({"target": target, "search": rows, "complete": False}))

        rows = tpu_plan.search(target, part=parts[0], config=_target_config(config, parts[0], a.quantize), on_row=partial,
                               log=lambda s: print(s, flush=True), **kw)  # fmt: skip
        report = {"target": target, "device_kind": next((r["device_kind"] for r in rows if "device_kind" in r), None),
                  "quantize": a.quantize, "search": rows, "complete": True}  # fmt: skip
        print(tpu_plan.format_search(rows))
    else:
        report = {"target": target, "mesh_spec": a.mesh, "quantize": a.quantize, "parts": {}}
        mesh = tpu_plan.mesh_for(target, a.mesh)
        for part in parts:
            r = tpu_plan.plan_part(
                target, mesh, part, extrapolate=not a.no_flops, **kw,
                config=(None, a.vae_tile) if part == "vae" and a.vae_tile else _target_config(config, part, a.quantize),
            )  # fmt: skip
            report["parts"][part] = r
            report.update(device_kind=r["device_kind"], devices=r["devices"], mesh=r["mesh"])
        report["pipeline"] = tpu_plan.pipeline_summary(report["parts"])
        print(tpu_plan.format_parts(report))
    if a.json:
        _write_json(a.json, tpu_plan.jsonable(report))
    return 0


def _target_config(config, part: str, quantize: str = "none"):
    """--config for --target: a training config overrides the train part, a sampling config's DiT
    fields (dtype, variant) the sample part; other parts keep the release's. `quantize` makes the
    sample part's DiT and the llm part's Step-LLM weight-only quantized, and the frozen base of a LoRA
    training config (QLoRA; full training updates every weight, so it keeps float weights)."""
    if quantize != "none":
        if part == "train":
            if config is None or "model" not in config or not (config.get("lora") or {}).get("rank"):
                raise SystemExit(
                    "--quantize with the train part needs a LoRA training config (e.g. --config=train_ti2v:lora): "
                    "full training updates float weights"
                )
            cfg = config.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.model.attention_kernel = "splash"
                cfg.model.quantize = quantize
            return cfg
        if part == "sample":
            from stepvideo_jax.tools.tpu_plan import release_dit

            base = release_dit() if config is None or "model" in config else _dit_config_from(config, train=False)
            return dataclasses.replace(base, attention_kernel="splash", quantize=quantize)
        if part == "llm":
            from stepvideo_jax.text import StepLLMConfig

            return StepLLMConfig(param_dtype="bfloat16", dtype="bfloat16", quantize=quantize)
    if config is None:
        return None
    if part == "train" and "model" in config:
        cfg = config.copy_and_resolve_references() if hasattr(config, "copy_and_resolve_references") else config
        cfg.model.attention_kernel = "splash"
        return cfg
    if part == "sample" and "model" not in config:
        return dataclasses.replace(_dit_config_from(config, train=False), attention_kernel="splash")
    return None


if __name__ == "__main__":
    sys.exit(main())
