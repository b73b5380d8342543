"""Entry point for ``ray job submit``: stream rows through the vLLM engine.

    ray job submit --working-dir . -- python jobs/generate.py \
        --input s3://bucket/prompts/ --output s3://bucket/generated --profile gpu
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
