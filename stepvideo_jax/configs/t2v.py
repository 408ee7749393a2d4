"""Sampling config for Step-Video-T2V (text -> video): the same code as the ti2v config with
`use_additional_conditions=False` (no first image, no motion score) and the T2V release's defaults.

    python sample.py --config=t2v:tiny --config.prompt="..."
    python sample.py --config=t2v:turbo   # Step-Video-T2V-Turbo: needs the Turbo weights

Variants: "" (Step-Video-T2V, 50 steps, CFG 9, time shift 13), "tiny" (random weights), "turbo": the
settings the Step-Video-T2V README recommends for Step-Video-T2V-Turbo, its inference-step-distilled
model (10-15 steps, CFG 5.0, time shift 17.0, 204 frames); they need the Turbo checkpoint
(stepfun-ai/stepvideo-t2v-turbo converted with convert_torch_weights.py into checkpoints/stepvideo-t2v-turbo);
the base model's weights give blurry videos at 15 steps.
"""

from stepvideo_jax.configs import ti2v

# The Step-Video-T2V release's default magic strings (its `stepvideo/config.py`).
POSITIVE_MAGIC = "超高清、HDR 视频、环境光、杜比全景声、画面稳定、流畅动作、逼真的细节、专业级构图、超现实主义、自然、生动、超细节、清晰。"
NEGATIVE_MAGIC = (
    "画面暗、低分辨率、不良手、文本、缺少手指、多余的手指、裁剪、低质量、颗粒状、签名、水印、用户名、模糊。"
)


VARIANTS = ("", "tiny", "turbo")


def get_config(arg: str | None = None):
    variant = (arg or "").strip()
    if variant not in VARIANTS:
        expected = ", ".join(repr(v) for v in VARIANTS)
        raise ValueError(f"unknown t2v config variant {variant!r}; expected one of: {expected}")
    c = ti2v.base_config("" if variant == "turbo" else variant)
    c.pipeline = "t2v"
    c.use_additional_conditions = False
    c.checkpoint_dir = "checkpoints/stepvideo-t2v"
    c.prompt = "一名宇航员在月球上发现一块石碑，上面印有“stepfun”字样，闪闪发光"
    c.positive_magic = POSITIVE_MAGIC
    c.negative_magic = NEGATIVE_MAGIC
    c.image = ""  # text-to-video takes no image
    c.motion_score = 0.0  # unused: the T2V model has no motion embedding
    if variant in ("", "turbo"):
        c.frames = 204
    if variant == "turbo":
        c.checkpoint_dir = "checkpoints/stepvideo-t2v-turbo"
        c.steps = 15  # the README's range is 10-15
        c.cfg = 5.0
        c.time_shift = 17.0
    return c
