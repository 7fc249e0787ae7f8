"""``python -m cyconv info``: print the build configuration."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyconv")
    parser.add_argument("command", choices=["info"], help="what to do")
    parser.parse_args(argv)
    from . import show_config

    show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
