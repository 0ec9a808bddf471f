"""``python -m unified_exec serve ...``"""

import sys

from .server._cli import main

sys.exit(main())
