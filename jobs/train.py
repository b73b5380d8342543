"""Entry point for ``ray job submit``: fine-tune a model of the loop on Ray Train + DeepSpeed.

    ray job submit --working-dir . -- python jobs/train.py --recipe backward \
        --config jobs/configs/train_backward.yaml --input s3://bucket/seed/ \
        --output s3://bucket/runs/backward --profile gpu
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
