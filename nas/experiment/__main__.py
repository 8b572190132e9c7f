"""``python -m nas.experiment``."""
import sys

from .experiment import main

sys.exit(main())
