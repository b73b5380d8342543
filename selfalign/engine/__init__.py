"""The engine: rows through an autoscaling pool of vLLM actors on Ray Data, resumably.

* ``config``    — vLLM and sampling settings, and ``StageJobConfig`` (pure);
* ``rows``      — engine request/response rows: what a row means to the engine (pure);
* ``processor`` — ``ray.data.llm``'s vLLM engine stage, configured from our configs;
* ``stage``     — the resumable exactly-once stage writer (Ray Data checkpoints);
* ``runner``    — ``EngineStage`` + ``run_engine_stage``: read, request, engine, finish,
  write — every engine stage (backtranslate, curate, a recipe's own) is one of these.
"""
