"""``python -m mlstorlets.client.cli``."""

import sys

from mlstorlets.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
