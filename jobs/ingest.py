"""Entry point for ``ray job submit``: ingest seed pairs or web documents.

    ray job submit --working-dir . -- python jobs/ingest.py corpus \
        --input s3://bucket/warc/ --output s3://bucket/corpus --profile gpu
    ray job submit --working-dir . -- python jobs/ingest.py seed \
        --input s3://bucket/oasst1/ --format oasst1 --output s3://bucket/seed
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, under --working-dir

from selfalign.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
