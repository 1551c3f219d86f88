"""Test suite. A regular package on purpose: schwab-py installs a stray top-level `tests`
package into site-packages, which would otherwise shadow this one for `from tests.x import y`."""
