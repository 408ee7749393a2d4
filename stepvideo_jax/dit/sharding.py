"""The DiT's logical-axis rules (its one table; `StepVideoDiT` enters it at its entry points).

FSDP shards every weight on its model-width side (over `data` too: ZeRO-3 across the CFG /
data-parallel replicas), tensor parallelism on heads / FFN width; activations are batch-sharded
(CFG rows on `data`), sequence-sharded on `sequence` (and on `fsdp` when the batch cannot use it),
head-sharded on `tensor`.
"""

from stepvideo_jax.sharding import ShardingRules

__all__ = ["DIT_SHARDING"]

DIT_SHARDING = ShardingRules.make(
    "dit",
    params=dict(
        layers=None,
        embed=("fsdp", "data"),
        heads="tensor",
        kv=None,
        mlp="tensor",
        modulation="tensor",
        caption="tensor",
        norm=None,
        lora_rank=None,
    ),
    activations=dict(
        batch=("data", "fsdp"),
        seq=("sequence", "fsdp"),
        embed=None,
        heads="tensor",
        kv=None,
        mlp="tensor",
        context=None,
    ),
)
