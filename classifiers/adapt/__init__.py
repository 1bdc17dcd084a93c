"""Domain adaptation: measure the gap between domains, and close it."""
from .gap import VERDICTS, Gap, measure_gap

__all__ = ["VERDICTS", "Gap", "measure_gap"]
