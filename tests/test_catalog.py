"""The names ``attnmtl list`` reads from the source are exactly the registries' own (that it
imports no torch is checked in tests/test_cli.py)."""

import json
import subprocess
import sys

import pytest

from attnmtl.catalog import KINDS, registered_names

# In a fresh interpreter: other tests register components of their own in this one.
REGISTRIES = """
import json
from attnmtl.data import list_datasets
from attnmtl.encoders import list_encoders
from attnmtl.models import list_models
from attnmtl.weighting import list_weightings
print(json.dumps({"datasets": list_datasets(), "encoders": list_encoders(),
                  "models": list_models(), "weightings": list_weightings()}))
"""


def test_the_source_names_are_the_registered_names():
    out = subprocess.run([sys.executable, "-c", REGISTRIES], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    registered = json.loads(out.stdout)
    assert set(registered) == set(KINDS)
    for kind, names in registered.items():
        assert registered_names(kind) == names, kind


def test_an_unknown_kind_is_one_line():
    with pytest.raises(ValueError, match="kind='losses'; expected one of: datasets"):
        registered_names("losses")
