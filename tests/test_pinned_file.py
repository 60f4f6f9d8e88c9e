"""A pretrained model's file from a pinned wheel is read only when it is the exact file samstream was tested with."""

import hashlib

import pytest

from samstream.model.errors import ModelLoadError
from samstream.model.pinned_file import read_pinned


def test_the_tested_file_is_read_and_any_other_is_refused_with_the_fix(tmp_path):
    good = tmp_path / "model.bin"
    good.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    assert read_pinned(good, expected, "the test model", "pip install x==1") == b"weights"
    good.write_bytes(b"weightz")
    with pytest.raises(ModelLoadError, match=r"is not the test model .* expected .*: pip install x==1$"):
        read_pinned(good, expected, "the test model", "pip install x==1")
    with pytest.raises(ModelLoadError, match=r"cannot read the test model .*missing.bin.*; pip install x==1$"):
        read_pinned(tmp_path / "missing.bin", expected, "the test model", "pip install x==1")
