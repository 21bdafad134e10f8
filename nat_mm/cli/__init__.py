"""nat_mm's command line: the console entry points and the options the tools share.

The one place of the package that parses command lines (argparse).
"""
