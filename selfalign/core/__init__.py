"""The bottom layer: what every other layer stands on.

* ``errors``    — the errors a user can act on (exit status 2);
* ``config``    — the strict pydantic base, YAML + dotted overrides, the placement fields;
* ``resources`` — ``ray_config.yaml``: resource profiles per stage, training and serving;
* ``io``        — files and Parquet shards on any pyarrow filesystem (atomic small writes);
* ``claims``    — one fingerprint/resume/claim-output mechanism and the existing-output policy;
* ``models``    — model references -> local model directories; content ids;
* ``pointers``  — the published-model pointer a running service follows;
* ``datasets``, ``cluster`` — Ray Datasets of rows, and joining or starting a Ray cluster.

Only ``datasets`` and ``cluster`` (and ``models``' builders) import ray/torch, inside
functions; the import contract (``make lint``) keeps the rest pure.
"""
