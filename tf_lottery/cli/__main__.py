"""``python -m tf_lottery.cli``: the ``tf-lottery`` command."""

import sys

from tf_lottery.cli import main

sys.exit(main())
