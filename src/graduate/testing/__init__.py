"""graduate's testing side: a pytest plugin (`graduate.testing.plugin`) and the verdict
objects its `chaos` fixture returns."""

from graduate import Verdict
from graduate.testing.outcome import ChaosOutcome

__all__ = ["ChaosOutcome", "Verdict"]
