"""The text encoders' logical-axis rules (Step-LLM and HunyuanCLIP enter this table themselves).

Same scheme as the DiT: FSDP on the model width, tensor parallelism on heads / FFN width, the
vocabulary rows on tensor and fsdp.
"""

from stepvideo_jax.sharding import ShardingRules

__all__ = ["TEXT_SHARDING"]

TEXT_SHARDING = ShardingRules.make(
    "text",
    params=dict(
        layers=None,
        embed="fsdp",
        heads="tensor",
        kv_heads="tensor",
        kv=None,
        mlp="tensor",
        vocab=("tensor", "fsdp"),
        norm=None,
        position=None,
    ),
    activations=dict(
        batch=("data", "fsdp"),
        seq=("sequence", "fsdp"),
        embed=None,
        heads="tensor",
        kv_heads="tensor",
        kv=None,
        mlp="tensor",
        vocab="tensor",
    ),
)
