"""Command-line tools: parity, plan, precompute, motion_scores, evaluate, demo_recipe (each `python -m stepvideo_jax.tools.NAME`)."""
