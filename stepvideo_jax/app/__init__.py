"""The web UI (Gradio): `python -m stepvideo_jax.app --config=demo` (see `stepvideo_jax.app.ui`)."""
