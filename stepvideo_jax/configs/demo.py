"""The embedded demo model: a small Step-Video-TI2V trained on this repo's synthetic motion clips.

    python -m stepvideo_jax.tools.demo_recipe --workdir=runs/demo  # trains it, exports stepvideo_jax/demo/{checkpoint,examples}
    python sample.py --config=demo                                 # then: example image + prompt -> MP4
    python sample.py --config=demo --config.prompt="a small white square moves up" \\
        --config.image=stepvideo_jax/demo/examples/white_square.png --config.motion_score=10

``stepvideo_jax/demo/checkpoint`` (bfloat16 parameters, with its manifest) and ``stepvideo_jax/demo/examples``
ship inside the package; the README's demo section has the recipe's measured time and the evaluation figures.

Variants (``--config=demo:VARIANT``):
  ""       sampling with the exported checkpoint ``stepvideo_jax/demo/checkpoint``
  "vae"    training config of the tiny Video-VAE v2 (``python train.py``, task "vae")
  "dit"    training config of the tiny TI2V DiT (``python train.py``, precomputed latents)
  "lora"   training rank-8 adapters on the shipped DiT (base frozen; ``python train.py``, precomputed latents)
  "recipe" the whole recipe's settings (data, text encoders, stages), read by
           ``python -m stepvideo_jax.tools.demo_recipe --workdir=runs/demo`` (fields overridable
           there: ``--recipe.data.backgrounds=v2``, ``--recipe.init_checkpoint=DIR``)
  "lora_recipe" teaching the shipped model the new shape word "star" with a LoRA (concept data, steps,
           evaluation), read by ``python -m stepvideo_jax.tools.lora_recipe --workdir=runs/demo_lora``

Everything is 17 frames at 64x64: the VAE (three levels, so 8x spatial compression) maps a clip to
3 latent frames of 8x8 with 8 channels, and the DiT's 2x2 patches make that 48 video tokens.
"""

import os

from ml_collections import config_dict

from stepvideo_jax.configs import common, ti2v

# The shipped model and its example inputs are package data (stepvideo_jax/demo).
DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo")

FRAMES, HEIGHT, WIDTH = 17, 64, 64
Z_CHANNELS = 8
VARIANTS = ("", "vae", "dit", "lora", "recipe", "lora_recipe")

# Network shapes (frozen-config fields). The VAE's GroupNorms use 2 groups: with one channel per
# group (8 groups at width 8) every channel is normalised on its own per frame, which erases the
# absolute colour of a frame, and the decoder then paints every background the same grey.
# Three levels instead of the release's four: 8x8 latents of a 64x64 frame (a 4x4 grid could not
# place a shape finer than a quarter of the frame), 24 pixel values per latent value.
VAE_MODEL = dict(
    z_channels=Z_CHANNELS,
    encoder_ch=8,
    encoder_ch_mult=(1, 2, 4),
    decoder_ch=8,
    decoder_ch_mult=(1, 2, 4),
    encoder_temporal_down_layers=(0, 1),
    decoder_temporal_up_layers=(1, 2),
    num_res_blocks=1,
    norm_groups=2,
)
STEP_LLM_MODEL = dict(
    hidden_size=64, num_heads=4, num_groups=2, ffn_hidden_size=256, num_layers=2, vocab_size=512, max_length=24
)
CLIP_MODEL = dict(
    hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=32, max_length=16
)
DIT_MODEL = dict(
    num_heads=4,
    head_dim=32,
    in_channels=Z_CHANNELS,
    out_channels=Z_CHANNELS,
    num_layers=4,
    patch_size=2,
    caption_channels=(STEP_LLM_MODEL["hidden_size"], CLIP_MODEL["hidden_size"]),
    rope_split=(16, 8, 8),
    use_additional_conditions=True,
    param_dtype="float32",
    dtype="float32",
    remat_policy="none",
    scan_layers=True,
    attention_kernel="xla",
)


def _sample_config() -> config_dict.ConfigDict:
    c = ti2v.base_config("")
    c.variant = "demo"
    c.checkpoint_dir = os.path.join(DEMO_DIR, "checkpoint")
    c.prompt = "a large red circle moves right"
    c.image = os.path.join(DEMO_DIR, "examples", "red_circle.png")
    c.positive_magic = ""  # the tiny text encoders only know the synthetic captions' words
    c.negative_magic = ""
    # Its tokenizers were built on the synthetic captions alone: other words reach the frozen text
    # encoders as byte / letter pieces it never trained on, so the video ignores them (or degrades).
    c.vocabulary_warning = True
    c.frames, c.height, c.width = FRAMES, HEIGHT, WIDTH
    c.steps = 30
    c.cfg = 4.0
    c.time_shift = 3.0
    c.motion_score = 10.0
    c.seed = 1234
    c.output_dir = "outputs/demo"
    c.fps = 8  # 17 frames: a ~2 s clip
    c.denoise_filter = False
    c.crop_540p = False
    c.dit_dtype = c.vae_dtype = c.text_dtype = "float32"
    c.param_dtype = "bfloat16"  # as shipped; every network still computes in float32
    c.attention_kernel = "xla"
    # Step caching is off by default (the shipped sample is the uncached one); `--config.cache.policy=auto`
    # picks the static schedule from these ratios, measured with
    # `python -m stepvideo_jax.tools.calibrate_cache --config=configs/demo.py --examples_dir=demo/examples
    # --motion_scores=2,5,10` (the bundled examples, not the held-out prompts) for 30 steps.
    c.cache.mag_ratios = (
        1.0000,
        1.0437,
        0.9998,
        0.9946,
        0.9838,
        0.9862,
        0.9863,
        0.9809,
        0.9826,
        0.9870,
        0.9794,
        0.9777,
        0.9774,
        0.9783,
        0.9703,
        0.9725,
        0.9660,
        0.9652,
        0.9605,
        0.9590,
        0.9502,
        0.9467,
        0.9350,
        0.9288,
        0.9146,
        0.8988,
        0.8771,
        0.8470,
        0.8053,
        0.7687,
    )
    # The demo model's videos stay above 45 dB of their uncached twins even with 3 reused steps in a row
    # (BENCHMARKS.md), so auto runs the static schedule with a wider budget than the generic defaults.
    c.cache.static_threshold = 0.3
    c.cache.max_skips = 3
    return c


def _train_sections(workdir: str) -> dict:
    return dict(
        mesh="data=-1,fsdp=1",
        checkpoint=common.checkpoint(every=200, keep=2, async_save=False),
        workdir=workdir,
    )


def _vae_config() -> config_dict.ConfigDict:
    # L2 (what PSNR measures): 100 steps reach the image PSNR that L1 reached after 500 (19.7 dB).
    vae_objective = config_dict.ConfigDict(dict(recon="l2", kl_weight=1e-4, image_weight=1.0))
    c = common.train_config(
        "vae",
        # latent_scale: what it hands the DiT (1 = its own latents; the recipe's latent_std sets it after
        # training; a decoder-only run over such a VAE keeps its value).
        dict(VAE_MODEL, param_dtype="float32", dtype="float32", latent_scale=1.0),
        objective=vae_objective,
        optim=common.optim(
            learning_rate=2e-3, warmup_steps=20, total_steps=450, end_lr_factor=0.05, b2=0.99, ema_decay=0.0
        ),
        data=_data(manifest="runs/demo/data/manifest.jsonl", kind="video", batch_size=3),
        # The first cosine cycle; the recipe's `vae_cycles` resumes it for a second one to 900 steps
        # (24.8 -> 28.2 dB image PSNR; README).
        train=common.train(steps=450, log_every=25, tensorboard=False),
        **_train_sections("runs/demo/vae"),
    )
    c.checkpoint.every = 150
    # Posterior std exp(-3) = 0.05 at the start: the decoder sees the latent mean from step 0.
    c.init.logvar_bias = -6.0
    return c


def _data(**overrides) -> config_dict.ConfigDict:
    return common.data(num_frames=FRAMES, buckets=((HEIGHT, WIDTH),), **overrides)


def _dit_config() -> config_dict.ConfigDict:
    return common.train_config(
        "dit",
        DIT_MODEL,
        objective=common.objective(cond_noise_mean=-4.0),
        optim=common.optim(
            learning_rate=1e-3, warmup_steps=100, total_steps=3500, end_lr_factor=0.05, b2=0.99, ema_decay=0.998
        ),
        data=_data(manifest="runs/demo/latents/index.jsonl", kind="latents", batch_size=32),
        train=common.train(steps=3500, log_every=100, tensorboard=False),
        **_train_sections("runs/demo/dit"),
    )


def _lora_config() -> config_dict.ConfigDict:
    c = _dit_config()
    c.lora = common.lora(rank=8, alpha=8.0)
    c.model.update(param_dtype="bfloat16")  # the shipped DiT as stored; adapters train in float32
    c.init.update(kind="converted", checkpoint=os.path.join(DEMO_DIR, "checkpoint"))
    c.optim.update(learning_rate=2e-3, warmup_steps=50, total_steps=1500, ema_decay=0.0)
    c.train.update(steps=1500)
    c.data.update(manifest="runs/demo/lora/latents/index.jsonl")
    c.workdir = "runs/demo/lora"
    return c


def _recipe_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.data = config_dict.ConfigDict(
        dict(
            num_train=4000,
            num_heldout=20,
            frames=FRAMES,
            height=HEIGHT,
            width=WIDTH,
            max_speed=0.6,
            seed=0,
            # "v1": dark backgrounds only (the shipped model); "v2": dark, light, mid-grey and coloured
            # (stepvideo_jax.data.synthetic), with a mid-grey frame-0 check for the evaluate stage.
            backgrounds="v1",
        )
    )
    # VAE training cycles run one after the other in WORKDIR/vae, each resuming the previous one:
    # (train.steps, optim.total_steps) = a cosine cycle to 450 steps, then one to 900.
    c.vae_cycles = ((450, 450), (900, 900))
    c.dit_steps = 3500  # DiT training steps (= optim.total_steps)
    # "" trains from nothing; a checkpoint folder (e.g. the shipped demo) is continued instead: its text
    # encoders are copied, the VAE's first cycle and the DiT start from its weights (shorter cycles then do).
    c.init_checkpoint = ""
    # With init_checkpoint: which of its trained networks start the runs ("vae" alone: the DiT trains from
    # nothing on the continued VAE's latents, whose space has moved under the old DiT).
    c.init_components = "vae,dit"
    # > 0: after the VAE stage, the VAE's latent_scale is set so that its latents of the first
    # latent_std_clips training clips have this std (0: the VAE's own scale, as the shipped v1 model).
    c.latent_std = 0.0
    c.latent_std_clips = 32
    # The extra stage `decoder`: (train.steps, optim.total_steps) cycles of the VAE's decoder alone (encoder
    # frozen, so the DiT's latents stay valid) after the DiT, at this peak learning rate.
    c.decoder_cycles = ()
    c.decoder_learning_rate = 5e-4
    c.decoder_batch_size = 0  # clips per step (0: the VAE config's 3); 6 halves the gradient noise at the plateau
    # WORKDIR/<decoder_run> holds the run: a new name starts a fresh run from WORKDIR/components' VAE (the
    # result of the previous one), e.g. a second, gentler pass after the first plateaued (README).
    c.decoder_run = "decoder"
    # evaluate stage: held-out prompts x these motion scores (and the v2 checks folder at the first).
    c.eval_motion_scores = (2.0, 5.0, 10.0)
    c.text = config_dict.ConfigDict(dict(seed=7, step_llm=STEP_LLM_MODEL, clip=CLIP_MODEL))
    c.precompute_seed = 0
    c.export_dir = os.path.join(DEMO_DIR, "checkpoint")
    c.export_dtype = "bfloat16"  # parameters of the shipped checkpoint (trained in float32)
    c.examples_dir = os.path.join(DEMO_DIR, "examples")
    c.stages = "data,text,vae,latents,dit,export,evaluate"
    return c


def _lora_recipe_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    base = _recipe_config().data
    c.data = config_dict.ConfigDict(
        dict(
            shape="star",
            # A replay share of the original training captions, trained toward the base model's own samples
            # (replay_targets="base"), so the original prompts' videos stay as the base makes them. With the
            # rendered clips as replay targets (1500 / 500 or 1000 / 1000, README) the original prompts lost
            # 5-10 points of direction.
            num_concept=1000,
            num_replay=1000,
            num_heldout=10,
            base_num_heldout=base.num_heldout,  # the demo's held-out captions stay out of the replay share
            base_seed=base.seed,
            frames=FRAMES,
            height=HEIGHT,
            width=WIDTH,
            max_speed=base.max_speed,
            seed=1,
            backgrounds=base.backgrounds,  # the base model's backgrounds, for the star and the replay clips
        )
    )
    c.precompute_seed = 1
    # The replay clips' training targets: "clips" (the rendered clips) or "base" (the shipped model's own
    # samples of them, the recipe's prior stage: prior preservation).
    c.replay_targets = "base"
    c.prior_cfg = 1.0  # guidance of those samples (1 = none; lora_recipe's docstring says why)
    c.rank = 8
    # Attention projections only (self and cross): rank 8 on them is 4.1% of the DiT's parameters, with the FFN
    # as well (the "lora" default) 7.3% -- the demo DiT is 128 wide, so a rank-8 adapter is large beside it.
    c.targets = (r"blocks\.attn1\.(wqkv|wo)", r"blocks\.attn2\.(wq|wkv|wo)")
    # Sized for the 2-core machine shared with other jobs (load average ~20: 2.4 s a step at "lora"'s batch 32):
    # 600 steps of 16 clips, ~5 passes over the 2000 clips.
    c.steps = 600
    c.batch_size = 16
    c.max_share_percent = 5.0  # the lora stage refuses adapters larger than this share of the DiT
    c.motion_scores = (2.0, 5.0, 10.0)  # the evaluation tool's defaults
    return c


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
    variant = (arg or "").strip()
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown demo config variant {variant!r}; expected one of: {', '.join(repr(v) for v in VARIANTS)}"
        )
    return {
        "": _sample_config,
        "vae": _vae_config,
        "dit": _dit_config,
        "lora": _lora_config,
        "recipe": _recipe_config,
        "lora_recipe": _lora_recipe_config,
    }[variant]()
