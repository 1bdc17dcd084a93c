"""Fine-tuning: layer freezing now; strategies, jobs and the advisor build on it (issue 6)."""
from .freezing import (FreezeReport, freeze_by_pattern, freeze_stages, frozen_batchnorms,
                       stage_report, train_mode)

__all__ = ["FreezeReport", "freeze_by_pattern", "freeze_stages", "frozen_batchnorms",
           "stage_report", "train_mode"]
