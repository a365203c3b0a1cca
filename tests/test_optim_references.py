"""The reference implementations of the optimizer tests are really there under ``make test``.

Each optimizer test skips (with a reason) when its reference package is missing, so that the
library's own tests still run in a bare environment. ``make test`` installs the references and
sets ``LANDSCAPE_REQUIRE_REFERENCES=1``; then a missing one fails here instead of turning a
reference comparison into a silent skip.
"""

import importlib.util
import os

import pytest

#: import name -> the pinned distribution in the Makefile's REFERENCES.
REFERENCES = {
    "torch": "torch==2.13.0",
    "pytorch_optimizer": "pytorch_optimizer==4.1.0",
    "torch_optimizer": "torch-optimizer==0.3.0",
    "pytorch_ranger": "pytorch_ranger==0.1.1",
    "sgd_sai": "sgd-sai==1.0.3",
    "fira": "fira==1.0.2",
    "ista_daslab_optimizers": "ista-daslab-optimizers==1.1.15",
}


@pytest.mark.single_dtype
@pytest.mark.skipif(os.environ.get("LANDSCAPE_REQUIRE_REFERENCES") != "1",
                    reason="references are required only under make test")
def test_every_reference_package_is_installed():
    missing = [pin for name, pin in REFERENCES.items() if importlib.util.find_spec(name) is None]
    assert not missing, f"install the optimizer references (make test does): {missing}"
