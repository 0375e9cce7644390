"""`python -m tfrobust ...`: the same command line as the `tfrobust` script."""

import sys

from tfrobust.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
