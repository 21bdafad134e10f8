"""nat_mm's command line: the console entry points and the options the tools share.

The one place of the package that parses command lines (argparse). The commands
``pip install nat_mm`` installs (setup.cfg's ``console_scripts``): ``nat-mm-download``
(:mod:`.download`) and ``nat-mm-convert`` (:mod:`.convert`), each a module whose
``main(argv=None)`` is the command.
"""
