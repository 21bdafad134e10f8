"""``nat-mm-convert`` (nat_mm/cli/convert.py), for those who look in tools/: same arguments,
e.g. ``python tools/model_converters/nat2mm.py SRC DST --arch tiny``."""
from nat_mm.cli.convert import main

if __name__ == '__main__':
    main()
