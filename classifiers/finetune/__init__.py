"""Fine-tuning: layer freezing, strategies (linear / partial / full / gradual / lp-ft / auto),
resumable jobs, WiSE-FT weight interpolation and the strategy advisor."""
from .advisor import DomainGap, Recommendation, advise, domain_gap, recommend
from .config import STRATEGIES, FinetuneConfig
from .freezing import (FreezeReport, freeze_by_pattern, freeze_stages, frozen_batchnorms,
                       stage_report, train_mode)
from .interpolate import interpolate_run, interpolate_weights
from .trainer import FinetuneJob, RunResult, evaluate_run, finetune

__all__ = ["DomainGap", "FinetuneConfig", "FinetuneJob", "FreezeReport", "Recommendation",
           "RunResult", "STRATEGIES", "advise", "domain_gap", "evaluate_run", "finetune",
           "freeze_by_pattern", "freeze_stages", "frozen_batchnorms", "interpolate_run",
           "interpolate_weights", "recommend", "stage_report", "train_mode"]
