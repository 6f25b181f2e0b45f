"""``python -m unreid``: the command line (:mod:`unreid.cli`), also as ``torchrun -m unreid train CONFIG ...``."""

import sys

from unreid.cli import main

sys.exit(main())
