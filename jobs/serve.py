"""Entry point for ``ray job submit``: ``selfalign serve`` on a cluster.

ray job submit --working-dir . -- python jobs/serve.py --model s3://bucket/run/m1/model \
    --host 0.0.0.0 --profile gpu --detach model_pointer=s3://bucket/run/serve/current.json

The token comes from ``SELFALIGN_SERVE_TOKEN`` in the job's runtime environment
(``--runtime-env-json '{"env_vars": {"SELFALIGN_SERVE_TOKEN": "..."}}'``). With
``--detach`` the job ends once the application is running and the application stays up;
without it the job lives as long as the service (``ray job stop`` removes it).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
