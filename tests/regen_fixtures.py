"""Regenerate the golden stage fixtures in tests/fixtures/stages/ -- on purpose only.

Run ``python tests/regen_fixtures.py`` after a deliberate change of a stage's byte
layout (which also needs a new stage id or a format version bump), then review
``git diff tests/fixtures``.  Each stage fixture is a pair: ``<id>-<case>.bin``, the
encoded bytes (a transform's parts concatenated in part order), and ``<id>-<case>.json``
with ``params`` (what the encoder was asked), ``configuration`` (what the file stores) and
``input`` -- the exact input: ``dtype``, ``shape``, ``values`` and ``base64`` of its bytes
for array stages, or ``N`` (the decoded length) and ``base64`` for ``huffman``/``lzw``
(``tests/common.py``, ``describe_input``), so that a third party can check each ``.bin``
from the JSON alone.  The golden container files are written by
``tests/test_container.py`` the same way (``NNZIP_REGEN_FIXTURES=1``).

A new stage needs at least one such pair and its page in ``spec/stages/`` must name each
pair: ``tests/test_stage_coverage.py`` fails for any registered stage without them, and pins
every pair from its own JSON from then on (no test of its own needed).  Write a new stage's
first pair with one call::

    NNZIP_REGEN_FIXTURES=1 python -c "import numpy as np; from tests.common import check_golden; \
        check_golden('negate', 'f4-3', np.array([1.5, -2.0, 0.0], '<f4'))"

To rewrite only some fixtures, pass pytest's selection on: ``python tests/regen_fixtures.py
-k golden_dense`` (the others are then left untouched).
"""

import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    env = dict(os.environ, NNZIP_REGEN_FIXTURES="1")
    tests = Path(__file__).parent
    selection = sys.argv[1:] or ["-k", "golden"]
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", str(tests), *selection], env=env))
