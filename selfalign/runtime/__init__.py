"""The one thin runtime layer: Ray, Ray Data + vLLM (and later Ray Train, Ray Serve).

Nothing stage-specific lives here; stage logic is in the pure modules of the package.
"""
