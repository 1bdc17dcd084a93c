"""Fine-tuning: layer freezing, strategies (linear / partial / full / gradual / lp-ft / auto),
resumable jobs, WiSE-FT weight interpolation and the strategy advisor. Names resolve on first
use, so reading ``STRATEGIES`` or ``FinetuneConfig`` imports no torch."""
from embedsvc.lazy import lazy_exports

_EXPORTS = {
    "Recommendation": "advisor", "advise": "advisor",
    "domain_gap": "advisor", "recommend": "advisor",
    "Adaptation": "advisor", "recommend_adaptation": "advisor",
    "STRATEGIES": "config", "FinetuneConfig": "config",
    "FreezeReport": "freezing", "freeze_by_pattern": "freezing", "freeze_stages": "freezing",
    "frozen_batchnorms": "freezing", "stage_report": "freezing", "train_mode": "freezing",
    "interpolate_run": "interpolate", "interpolate_weights": "interpolate",
    "FinetuneJob": "trainer", "RunResult": "trainer", "evaluate_run": "evaluate", "finetune": "trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
