# Loaded by child Python processes of the tests (PYTHONPATH points here): see tests/netguard.py.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import netguard  # noqa: E402

netguard.install()
