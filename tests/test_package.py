"""The package's public names load lazily and stay the documented objects whatever is imported first."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_are_the_functions_and_jax_loads_on_first_use():
    code = (
        "import sys\n"
        "import stablebptt as sb\n"
        "assert 'jax' not in sys.modules, 'importing the package must not import JAX'\n"
        "import stablebptt.training  # imports the submodule stablebptt.rollout first\n"
        "assert callable(sb.rollout) and sb.rollout.__name__ == 'rollout', sb.rollout\n"
        "assert sb.rollout_loss.__module__ == 'stablebptt.rollout'\n"
        "assert sb.updates.__name__ == 'stablebptt.updates'  # subpackages by attribute, as before\n"
        "assert set(sb.__all__) <= set(dir(sb))\n"
        "assert all(getattr(sb, name) is not None for name in sb.__all__)\n"
        "try:\n"
        "    sb.no_such_name\n"
        "except AttributeError as err:\n"
        "    assert 'no_such_name' in str(err)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
