"""`python -m monitor.model`: the helper process that does the work needing transformers."""

import sys

from monitor.model.torch_backend import _helper_main

sys.exit(_helper_main(sys.argv[1:]))
