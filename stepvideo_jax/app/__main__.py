from stepvideo_jax.app.ui import run_main

run_main()
