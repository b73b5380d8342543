"""Entry point for ``ray job submit``: any recipe (``selfalign run <recipe>``).

ray job submit --working-dir . -- python jobs/run.py humback --config jobs/configs/humback_7b_gpu.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
