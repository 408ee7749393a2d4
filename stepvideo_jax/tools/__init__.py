"""Command-line tools (each `python -m stepvideo_jax.tools.NAME`): sample, train, convert, parity, plan,
precompute, motion_scores, evaluate, demo_recipe, lora, and the local multi-process launcher `launch`."""
