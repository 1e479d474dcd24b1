import sys
from pathlib import Path

# Lets the test modules here import the shared fakes (``tests/fakes.py``).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
