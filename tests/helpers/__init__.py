"""Code the tests share, imported as ``helpers.<module>``; fixtures stay in ``conftest.py``.

``pyproject.toml`` puts ``tests/`` on pytest's path, so ``from helpers.processes import Proc``
works from any test folder (benchmarks put ``tests/`` on ``sys.path`` themselves). Test
modules never import each other: what two of them need lives here.
"""
