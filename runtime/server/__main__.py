"""``python -m visionrt.runtime.server MODEL_DIR ...``: the ``serve`` command on its own."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import VisionRTError
from .cli import add_arguments, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionrt.runtime.server", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args)
    except VisionRTError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
