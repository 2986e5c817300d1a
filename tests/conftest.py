"""pytest configuration shared by all tests.

* makes ``tests/common.py`` and ``tests/nnz_tools.py`` importable;
* selects Keras' torch backend (the one CI installs) before any test imports Keras.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).parent))
