"""The scoring service on Ray Serve (``selfalign serve``).

Pure: ``config`` (``ServeConfig``), ``schemas`` (request/response bodies, limits),
``guard`` (bearer token and body-size middleware), ``rows`` (a request as the batch
stages' engine rows). Runtime: ``runner`` (one model slot over a vLLM async engine,
switching on a published pointer), ``app`` (the FastAPI ingress, deployments, and
``build_app`` for a KubeRay RayService).
"""
