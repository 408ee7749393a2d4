"""Teaches the shipped demo model a new word with a LoRA, on this machine, and measures it.

    python -m stepvideo_jax.tools.lora_recipe --workdir=runs/demo_lora        # every stage, ~14 min on an idle 2-core machine
    python -m stepvideo_jax.tools.lora_recipe --workdir=runs/demo_lora --stages=eval
    python -m stepvideo_jax.tools.lora_recipe --workdir=runs/demo_lora --recipe.replay_targets=clips  # rendered replay

The concept is the shape "star" (``stepvideo_jax.data.synthetic.CONCEPT_SHAPES``), which the demo model never
saw: its tokenizers split the word into known pieces (sentencepiece "▁s t ar", BERT "s ##t ##a ##r"; no
unknown token), so captions with it differ from every training caption. The base stays frozen; only
rank-8 adapters on the attention projections train (``configs/demo.py`` variant "lora", targets narrowed
to stay under 5% of the DiT's parameters).

Stages (settings in ``configs/demo.py`` variant "lora_recipe"; each reads what the previous ones wrote):

  data     star clips (every size, colour, direction) mixed with a replay share of the original training
           captions; 10 held-out star prompts in the Step-Video-TI2V-Eval layout      -> WORKDIR/data
           and the demo's original 20 held-out prompts (``demo_recipe``'s heldout)  -> WORKDIR/original
  latents  VAE latents + text states with the shipped demo VAE and text encoders     -> WORKDIR/latents
  prior    with ``recipe.replay_targets="base"`` (the default): each replay clip's target latents replaced by the shipped
           model's own sample from the clip's first frame, caption, motion score (prior preservation, as
           DreamBooth's class images: the adapter learns to leave the original prompts' videos as the base
           makes them, not to move them toward the rendered clips). Sampled without guidance
           (``recipe.prior_cfg`` = 1): the conditional branch then trains toward its own samples, while
           guided samples as targets make sampling with guidance apply it twice (measured: more motion
           at every requested score)                                    -> WORKDIR/prior/index.jsonl
  lora     the adapters trained on the shipped DiT (``train.py``'s loop, ``demo:lora``)
                                                              -> WORKDIR/lora/adapter.safetensors
  eval     the evaluation tool on the star prompts and on the original prompts, base and with the
           adapter (``--arms=base`` or ``lora`` for one of them; the table takes every evaluation present)
                                                             -> WORKDIR/eval/<set>_<base|lora>, WORKDIR/eval/table.md

Stage timings and summaries go to WORKDIR/recipe_timings.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from absl import app, flags

from stepvideo_jax.files import write_text_atomic

__all__ = ["run_lora_recipe", "STAGES", "lora_table"]

STAGES = ("data", "latents", "prior", "lora", "eval")
EVAL_SETS = ("concept", "original")
ARMS = ("base", "lora")  # the shipped model alone, and with the adapter


def _demo_config(variant: str):
    from stepvideo_jax.configs import demo

    return demo.get_config(variant)


def _bench_dir(workdir: str, which: str) -> str:
    return os.path.join(workdir, "data" if which == "concept" else "original", "heldout")


def _stage_data(recipe, workdir: str) -> dict:
    from stepvideo_jax.data.synthetic import write_concept_dataset, write_heldout

    summary = write_concept_dataset(os.path.join(workdir, "data"), **recipe.data.to_dict())
    # The demo's own held-out prompts (the same files as its data stage writes).
    summary["original_heldout"] = write_heldout(
        os.path.join(workdir, "original"), **_demo_config("recipe").data.to_dict()
    )["heldout"]
    return summary


def _stage_latents(recipe, workdir: str) -> dict:
    from stepvideo_jax.components import prompt_encoder_from_checkpoint, restore_component
    from stepvideo_jax.config import dataclass_from
    from stepvideo_jax.tools.precompute import precompute
    from stepvideo_jax.training.encode import ClipEncoder
    from stepvideo_jax.training.objective import ObjectiveConfig

    lora_config = _demo_config("lora")
    ckpt = lora_config.init.checkpoint  # the shipped demo checkpoint: its VAE and text encoders
    objective = dataclass_from(ObjectiveConfig, lora_config.objective)
    encoder = ClipEncoder(restore_component(ckpt, "vae"), prompt_encoder_from_checkpoint(ckpt), objective)
    data = recipe.data
    return precompute(
        os.path.join(workdir, "data", "manifest.jsonl"),
        os.path.join(workdir, "latents"),
        encoder,
        num_frames=int(data.frames),
        frame_stride=1,
        buckets=[(int(data.height), int(data.width))],
        seed=int(recipe.precompute_seed),
    )


REPLAY_TARGETS = ("clips", "base")


def _replay_targets(recipe) -> str:
    value = str(recipe.get("replay_targets", "clips"))
    if value not in REPLAY_TARGETS:
        raise ValueError(f"recipe.replay_targets must be one of {', '.join(REPLAY_TARGETS)}; got {value!r}")
    return value


def _stage_prior(recipe, workdir: str) -> dict:
    import numpy as np

    from stepvideo_jax.api import TI2VPipeline
    from stepvideo_jax.data.manifest import iter_path_index
    from stepvideo_jax.files import atomic_write, write_jsonl_atomic
    from stepvideo_jax.training.loop import NULL_PROMPT_FILE

    if _replay_targets(recipe) == "clips":
        return {"replay_targets": "clips"}
    index = os.path.join(workdir, "latents", "index.jsonl")
    out_dir = os.path.join(workdir, "prior")
    os.makedirs(os.path.join(out_dir, "items"), exist_ok=True)
    rows = [row for _, row in iter_path_index(index, "latents", '{"latents": path, "video": path, "caption": ...}')]
    for row in rows:  # precompute writes the clip's path as the manifest resolved it
        row["video"] = os.path.join(os.path.dirname(os.path.abspath(index)), row["video"])
    word = f" {recipe.data.shape} "
    replay = [i for i, row in enumerate(rows) if word not in f" {row['caption']} "]
    pipe = TI2VPipeline.from_checkpoint(_demo_config("lora").init.checkpoint, progress=False)

    def jobs():
        for i in replay:
            first = np.load(rows[i]["video"], mmap_mode="r")[0]  # uint8 [H, W, 3]: the clip's first frame
            yield pipe.settings(
                np.asarray(first),
                prompt=rows[i]["caption"],
                motion_score=float(rows[i]["motion_score"]),
                cfg=float(recipe.prior_cfg),
                seed=int(recipe.precompute_seed) * 1_000_003 + i,  # one noise draw per clip, fixed by the recipe
            )

    new_rows = [{**row, "latents": os.path.relpath(row["latents"], out_dir)} for row in rows]
    for i, out in zip(replay, pipe.generate_all(jobs(), total=len(replay), progress=True)):
        with np.load(rows[i]["latents"]) as item:
            arrays = dict(item)
        if arrays["latents"].shape != out.latents.shape[1:]:
            raise ValueError(
                f"{rows[i]['latents']}: latents {arrays['latents'].shape} but the base model samples "
                f"{out.latents.shape[1:]}; the data and the sampling config disagree on the clip size"
            )
        arrays["latents"] = out.latents[0].astype(np.float32)  # [F', h, w, C]: the base model's own video
        name = os.path.join("items", os.path.basename(rows[i]["latents"]))
        with atomic_write(os.path.join(out_dir, name)) as f:
            np.savez(f, **arrays)
        new_rows[i]["latents"] = name
    # The dropped-caption text states travel with the index (the training loop reads them beside it).
    null_prompt = os.path.join(os.path.dirname(index), NULL_PROMPT_FILE)
    if os.path.isfile(null_prompt):
        shutil.copyfile(null_prompt, os.path.join(out_dir, NULL_PROMPT_FILE))
    write_jsonl_atomic(os.path.join(out_dir, "index.jsonl"), new_rows)
    return {"replay_targets": "base", "replaced": len(replay), "kept": len(rows) - len(replay)}


def _lora_train_config(recipe, workdir: str):
    config = _demo_config("lora")
    prior = _replay_targets(recipe) == "base"
    config.data.manifest = os.path.join(workdir, "prior" if prior else "latents", "index.jsonl")
    config.lora.update(rank=int(recipe.rank), alpha=float(recipe.rank), targets=tuple(recipe.targets))
    config.train.steps = int(recipe.steps)
    config.optim.total_steps = int(recipe.steps)
    config.data.batch_size = int(recipe.batch_size)
    config.workdir = os.path.join(workdir, "lora")
    return config


def _param_share(config) -> dict:
    """Adapter and base parameter counts of the DiT at the config's rank (shapes only, nothing computed)."""
    from flax import nnx

    from stepvideo_jax.config import dataclass_from
    from stepvideo_jax.dit import DiTConfig, StepVideoDiT
    from stepvideo_jax.lora import LoRAConfig, apply_lora, lora_param_count

    model_cfg = dataclass_from(DiTConfig, config.model)
    lora_cfg = dataclass_from(LoRAConfig, {k: v for k, v in config.lora.items() if k != "seed"})
    adapters, base = lora_param_count(
        nnx.eval_shape(lambda: apply_lora(StepVideoDiT(model_cfg, rngs=nnx.Rngs(0)), lora_cfg))
    )
    return {"adapter_params": adapters, "base_params": base, "adapter_share_percent": round(100.0 * adapters / base, 2)}


def _stage_lora(recipe, workdir: str) -> dict:
    from stepvideo_jax.training.loop import ADAPTER_FILE, train

    config = _lora_train_config(recipe, workdir)
    share = _param_share(config)
    if share["adapter_share_percent"] >= float(recipe.max_share_percent):
        raise ValueError(
            f"rank {recipe.rank} adapters are {share['adapter_share_percent']}% of the DiT's parameters; "
            f"expected under {recipe.max_share_percent}%: lower the rank"
        )
    print(
        f"LoRA rank {recipe.rank}: {share['adapter_params']} adapter parameters, "
        f"{share['adapter_share_percent']}% of the DiT's {share['base_params']}",
        flush=True,
    )
    load = os.getloadavg()
    t0 = time.perf_counter()
    result = train(config, config.workdir)
    seconds = time.perf_counter() - t0
    adapter = os.path.join(config.workdir, ADAPTER_FILE)
    losses = [result.losses[k] for k in sorted(result.losses)]
    tail = losses[-100:]
    return {
        **share,
        "rank": int(recipe.rank),
        "steps": result.final_step,
        "batch_size": int(config.data.batch_size),
        "train_seconds": round(seconds, 1),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "first_loss": losses[0] if losses else None,
        "mean_loss_last_100": sum(tail) / len(tail) if tail else None,
        "adapter": adapter,
        "adapter_bytes": os.path.getsize(adapter) if os.path.exists(adapter) else None,
    }


def _stage_eval(recipe, workdir: str, arms=ARMS) -> dict:
    from stepvideo_jax.evaluation import evaluate_benchmark
    from stepvideo_jax.training.loop import ADAPTER_FILE

    adapter = os.path.join(workdir, "lora", ADAPTER_FILE)
    if "lora" in arms and not os.path.isfile(adapter):
        raise ValueError(f"{adapter} does not exist; run the lora stage first (--stages=lora) or give --arms=base")
    scores = [float(s) for s in recipe.motion_scores]
    seconds = {}
    for which in EVAL_SETS:
        for arm in arms:
            config = _demo_config("")
            if arm == "lora":
                config.lora, config.lora_scale = adapter, "1.0"
            t0 = time.perf_counter()
            evaluate_benchmark(config, _bench_dir(workdir, which), _eval_dir(workdir, which, arm), scores)
            seconds[f"{which}_{arm}"] = round(time.perf_counter() - t0, 1)
    # The table from every evaluation in WORKDIR/eval (this run's and earlier runs' arms).
    summaries = {}
    for which in EVAL_SETS:
        for arm in ARMS:
            path = os.path.join(_eval_dir(workdir, which, arm), "summary.json")
            if os.path.isfile(path):
                with open(path) as f:
                    summaries[f"{which}_{arm}"] = json.load(f)
    table = lora_table(summaries)
    write_text_atomic(os.path.join(workdir, "eval", "table.md"), table)
    print(table, flush=True)
    keys = ("psnr_mean", "psnr_min", "direction_accuracy", "motion_monotonic_fraction", "measured_motion_by_requested")
    return {
        name: {**{k: s[k] for k in keys}, "seconds": seconds.get(name, "earlier run")} for name, s in summaries.items()
    }


def _eval_dir(workdir: str, which: str, arm: str) -> str:
    return os.path.join(workdir, "eval", f"{which}_{arm}")


def lora_table(summaries: dict) -> str:
    """Markdown table: per prompt set, base vs adapter (frame-0 PSNR, direction accuracy, motion monotonic)."""
    lines = [
        "| prompts | model | frame-0 PSNR dB (min) | direction accuracy | motion monotonic | measured motion @ requested |",
        "|---|---|---|---|---|---|",
    ]
    names = {"concept": "10 held-out star prompts", "original": "20 original held-out prompts"}
    for which in EVAL_SETS:
        for arm in ("base", "lora"):
            s = summaries.get(f"{which}_{arm}")
            if s is None:
                continue
            motion = " / ".join(f"{v:.1f} @ {k}" for k, v in s["measured_motion_by_requested"].items())
            lines.append(
                f"| {names[which]} | {'base' if arm == 'base' else 'base + adapter'} | "
                f"{s['psnr_mean']:.2f} ({s['psnr_min']:.2f}) | {100 * s['direction_accuracy']:.0f}% | "
                f"{100 * s['motion_monotonic_fraction']:.0f}% | {motion} |"
            )
    return "\n".join(lines) + "\n"


_STAGE_FUNCS = {
    "data": _stage_data,
    "latents": _stage_latents,
    "prior": _stage_prior,
    "lora": _stage_lora,
    "eval": _stage_eval,
}


def run_lora_recipe(workdir: str, stages=STAGES, recipe=None, arms=ARMS) -> dict:
    """Runs `stages` in order (the eval stage evaluates `arms`, among "base" and "lora"); returns
    {stage: {"seconds": ..., **summary}} (also written to WORKDIR/recipe_timings.json, merged with earlier
    runs' entries)."""
    recipe = recipe or _demo_config("lora_recipe")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected some of {', '.join(STAGES)}")
    if not arms or any(a not in ARMS for a in arms):
        raise ValueError(f"arms must be some of {', '.join(ARMS)}; got {','.join(arms)!r}")
    _replay_targets(recipe)  # a bad value fails here, before the data and latents stages' minutes
    from stepvideo_jax.tools.demo_recipe import run_timed_stages

    def run_stage(stage):
        return _STAGE_FUNCS[stage](recipe, workdir, arms) if stage == "eval" else _STAGE_FUNCS[stage](recipe, workdir)

    return run_timed_stages(workdir, [s for s in STAGES if s in stages], run_stage)


def main(argv):
    del argv
    stages = [s.strip() for s in flags.FLAGS.stages.split(",") if s.strip()]
    try:
        arms = [a.strip() for a in flags.FLAGS.arms.split(",") if a.strip()]
        record = run_lora_recipe(flags.FLAGS.workdir, stages, _RECIPE["flag"].value, arms=arms)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(record, indent=1, default=str), file=sys.stdout)


def _define_flags() -> None:
    flags.DEFINE_string("workdir", "runs/demo_lora", "folder for the concept data, latents, adapter and evaluation")
    flags.DEFINE_string("stages", ",".join(STAGES), f"comma-separated stages among {','.join(STAGES)}")
    flags.DEFINE_string("arms", ",".join(ARMS), "what the eval stage evaluates: base (shipped model), lora (+ adapter)")
    from ml_collections import config_flags

    from stepvideo_jax.configs import config_path

    _RECIPE["flag"] = config_flags.DEFINE_config_file(
        "recipe", config_path("demo") + ":lora_recipe", "The recipe's settings (--recipe.FIELD=VALUE overrides)."
    )


_RECIPE: dict = {}


if __name__ == "__main__":
    _define_flags()
    app.run(main)
