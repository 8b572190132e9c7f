"""``python -m nas.report``."""
import sys

from .report import main

sys.exit(main())
