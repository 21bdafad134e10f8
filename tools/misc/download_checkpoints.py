"""``nat-mm-download`` (nat_mm/cli/download.py), for those who look in tools/: same arguments,
e.g. ``python tools/misc/download_checkpoints.py --list``."""
import sys

from nat_mm.cli.download import main

if __name__ == '__main__':
    sys.exit(main())
