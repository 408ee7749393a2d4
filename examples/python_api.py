"""The Python API: one loaded pipeline, two videos (the second reuses the compiled programs).

python examples/python_api.py            # writes outputs/api/red_circle.mp4 (+ .png) and white_square.mp4
"""

import stepvideo_jax
from stepvideo_jax.api import DEMO_CHECKPOINT

pipe = stepvideo_jax.TI2VPipeline.from_checkpoint(DEMO_CHECKPOINT)  # or .from_config("demo")
examples = f"{DEMO_CHECKPOINT}/../examples"
out = pipe(image=f"{examples}/red_circle.png", prompt="a large red circle moves right", motion_score=10, seed=1)
print(out.frames.shape, out.frames.dtype, out.save("outputs/api/red_circle.mp4"), out.timings)
out = pipe(image=f"{examples}/white_square.png", prompt="a small white square moves up", motion_score=10, seed=2)
print(out.save("outputs/api/white_square.mp4"), out.timings)  # same shapes: no compilation this time
