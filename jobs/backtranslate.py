"""Entry point for ``ray job submit``: ``selfalign backtranslate`` on a cluster.

ray job submit --working-dir . -- python jobs/backtranslate.py --input ... --output ... --profile gpu
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["backtranslate", *sys.argv[1:]]))
