"""The decision guide "how much data, how similar a domain → which strategy", made executable.

Size (labelled training images):   < 500 → feature extraction (``linear``, or a head on
embeddings); 500 – 5,000 → ``partial`` (the top stages adapt, the rest stay general);
> 5,000 → ``full`` (enough data to move every layer without overfitting).
Domain gap (when a target set is given): measured on frozen embeddings (classifiers/adapt/gap.py:
proxy A-distance, MMD, Fréchet, CORAL). A very different target means the pretrained features
fit it less: unfreeze one step more than size alone says, and adapt on target data.

Adaptation (the guide's "Domain similar? No → domain adaptation", with the data the user has,
cheapest first): labelled target images (``MIN_TARGET_LABELS`` per class) → fine-tune on them
mixed with the source; unlabelled ones only → a CORAL-aligned head first (seconds, no backbone
training), then domain-invariant fine-tuning (DANN when the domains are very different, Deep
CORAL when merely shifted: matching covariances is enough for a moderate shift, and cheaper to
get right than an adversary); a named kind of difference → its augmentation preset, on top.

Text follows the same guide, counted in labelled texts (the seeds' BERT-for-sentiment case), with
a transformer's blocks as its stages, and the same adaptation methods, with text's own
augmentation presets.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


from classifiers.adapt.choices import PRESETS_OF
from classifiers.adapt.gap import Gap, measure_gap
from embedsvc.backbones.registry import DEFAULT_BACKBONE

SMALL, LARGE = 500, 5000  # the guide's boundaries, in labelled images
MIN_TARGET_LABELS = 5  # labelled target images per class worth a target fine-tune
LADDER = ("linear", "partial", "full")
EPOCHS = {"linear": 10, "partial": 15, "full": 10}


@dataclass(frozen=True)
class Recommendation:
    strategy: str
    reasons: tuple[str, ...]
    epochs: int
    partial_stages: int = 2
    gap: Gap | None = None
    per_class: dict[str, int] = field(default_factory=dict)
    unreadable: tuple[tuple[str, str], ...] = ()  # (path, reason) of inputs left uncounted
    modality: str = "image"

    @property
    def unit(self) -> str:
        """What the data is counted in: its modality (an image, a text)."""
        return self.modality

    def command(self, data: str, backbone: str = DEFAULT_BACKBONE, out: str = "runs/finetuned") -> str:
        extra = f" --partial-stages {self.partial_stages}" if self.strategy == "partial" else ""
        return (f"embedsvc finetune {data} --backbone {backbone} --strategy {self.strategy}{extra} "
                f"--epochs {self.epochs} --val-split 0.1 --out {out}")


@dataclass(frozen=True)
class Adaptation:
    """How to close a domain gap: ``method`` is none, target-finetune, or da (a CORAL head
    first, then fine-tuning with the ``da`` loss); ``preset`` an augmentation preset or None."""

    method: str
    reasons: tuple[str, ...]
    da: str | None = None
    preset: str | None = None

    def commands(self, data: str, target: str, rec: Recommendation,
                 backbone: str = DEFAULT_BACKBONE) -> list[str]:
        base = rec.command(data, backbone, out="runs/adapted")
        aug = (f" --augment {self.preset}" if self.preset in PRESETS_OF[rec.modality] else "")
        if self.method == "target-finetune":
            return [f"{base} --target-labelled {target}{aug}"]
        if self.method == "da":
            return [coral_head_command(data, target, backbone),
                    f"{base} --target-data {target} --da {self.da}{aug}"]
        return [f"{base}{aug}"] if aug else []


def head_command(data: str, backbone: str) -> str:
    """Feature extraction: embed with the frozen encoder, then a scikit-learn head."""
    return (f"embedsvc embed-dataset {data} --backbone {backbone} --out store && "
            f"embedsvc train-head store --out head")


def coral_head_command(data: str, target: str, backbone: str) -> str:
    return (f"embedsvc embed-dataset {data} --backbone {backbone} --out stores/source && "
            f"embedsvc embed-dataset {target} --backbone {backbone} --out stores/target && "
            f"embedsvc train-head stores/source --target stores/target --align coral "
            f"--out heads/coral")


def recommend_adaptation(gap: Gap | None, target_labels_per_class: int = 0,
                         difference: str | None = None) -> Adaptation:
    """The adaptation method for the data at hand (see the module docstring)."""
    preset = difference if any(difference in ps for ps in PRESETS_OF.values()) else None
    why_preset = ([f"the domains differ in {difference}: the {difference!r} augmentation preset "
                   f"makes source inputs look like that"]
                  if preset else [])
    if target_labels_per_class >= MIN_TARGET_LABELS:
        return Adaptation("target-finetune", (
            f"the target has {target_labels_per_class}+ labelled inputs per class: fine-tune on them "
            f"mixed into every source batch (the guide's first strategy; labels beat any "
            f"unsupervised alignment)",) + tuple(why_preset), preset=preset)
    if gap is None or gap.verdict == "similar":
        if preset:
            return Adaptation("augment", tuple(why_preset), preset=preset)
        return Adaptation("none", ("the domains are similar: no adaptation needed",))
    da = "dann" if gap.verdict == "very different" else "coral"
    return Adaptation("da", (
        f"the target is {gap.verdict} and has no labels (fewer than {MIN_TARGET_LABELS} per class): "
        f"first a CORAL-aligned head (seconds, no backbone training); if that is not enough, "
        f"fine-tune with the {da} loss on the unlabelled target inputs "
        + ("(an adversary aligns whole distributions, needed for a large gap)" if da == "dann" else
           "(matching feature covariances is enough for a moderate shift)"),) + tuple(why_preset),
        da=da, preset=preset)


def recommend(n_images: int, n_classes: int, gap: Gap | None = None,
              per_class: dict[str, int] | None = None,
              unreadable: list[tuple[str, str]] | tuple = (), modality: str = "image") -> Recommendation:
    """``n_images``: labelled training inputs (images, or texts when ``modality`` is text)."""
    unit = modality
    if n_images < SMALL:
        step, why = 0, (f"{n_images} labelled {unit}s is under {SMALL}: too few to move the backbone "
                        f"without overfitting, so keep it frozen and train only a classifier on its "
                        f"features (feature extraction)")
    elif n_images <= LARGE:
        step, why = 1, (f"{n_images} labelled {unit}s is between {SMALL} and {LARGE}: enough to adapt "
                        f"the top stages, which hold the task-specific features, while the early "
                        f"general ones stay frozen (partial fine-tuning)")
    else:
        step, why = 2, (f"{n_images} labelled {unit}s is over {LARGE}: enough to fine-tune every layer "
                        f"(with lower learning rates towards the input) without overfitting")
    reasons = [why]
    stages = 2
    if gap is not None:
        desc = (f"domain gap to the target: proxy A-distance {gap.proxy_a_distance:.2f} ({gap.verdict}; "
                f"a classifier tells the two sets apart with {100 * (1 - gap.domain_error):.0f}% accuracy)")
        if gap.verdict == "very different":
            if step < 2:
                step += 1
                reasons.append(desc + ": the pretrained features fit the target less, so unfreeze one "
                               "step more than the data size alone suggests")
            else:
                reasons.append(desc + ": already fine-tuning everything; fine-tune on labelled target "
                               "data where you have it and keep augmentation on")
        elif gap.verdict == "shifted":
            stages = 3
            reasons.append(desc + ": moderate, so partial runs unfreeze three stage groups instead of two")
        else:
            reasons.append(desc + ": small, the data size decides")
    if per_class:
        smallest = min(per_class, key=per_class.get)
        if per_class[smallest] < 10:
            reasons.append(f"class {smallest!r} has only {per_class[smallest]} {unit}s: collect more, or "
                           f"use --class-weight balanced with a head")
    strategy = LADDER[step]
    return Recommendation(strategy, tuple(reasons), EPOCHS[strategy], stages, gap,
                          dict(per_class or {}), tuple(unreadable), modality)


def domain_gap(source: str, target: str, backbone: str = DEFAULT_BACKBONE, max_per_set: int = 300,
               seed: int = 0, progress: bool = True) -> Gap:
    """The gap between two image sets (or stores) on the backbone's frozen embeddings."""
    from classifiers.adapt.sides import load_sides

    a, b = load_sides(source, target, backbone, max_per_set, seed, progress)
    return measure_gap(a.vectors, b.vectors, seed=seed)


def target_labels_per_class(target: str, classes: list[str]) -> int:
    """The fewest labelled images of any source class in ``target`` (0 when unlabelled)."""
    from embedsvc.datasets.sources import scan_source

    counts = Counter(r.label for r in scan_source(target) if r.label in classes)
    return min((counts.get(c, 0) for c in classes), default=0)


def readable(records: list, progress: bool = False, modality: str = "image"
             ) -> tuple[list, list[tuple[str, str]]]:
    """The records whose images decode (at 1/8 scale where the format allows: a truncated or
    mislabelled file still fails) or whose texts read, and (path, reason) for the others: the
    advice counts what fine-tuning and train-head will use."""
    if modality != "image":
        return _readable_texts(records)
    from embedsvc.errors import ImageDecodeError
    from embedsvc.images import load_upright

    ok, bad = [], []
    it = records
    if progress and len(records) > 200:
        from tqdm import tqdm

        it = tqdm(records, desc="checking images", unit="img")
    for r in it:
        try:
            load_upright(r.path, draft_to=32)
            ok.append(r)
        except (ImageDecodeError, OSError) as exc:
            bad.append((r.path, getattr(exc, "reason", None) or str(exc)))
    return ok, bad


def advise(data: str, target: str | None = None, backbone: str | None = None,
           progress: bool = True, difference: str | None = None) -> tuple[Recommendation, Adaptation | None]:
    """The strategy for ``data`` (images or texts; ``backbone`` None: the default encoder of
    its modality), and how to adapt to ``target`` if given."""
    from classifiers.heads.features import TWO_CLASSES
    from embedsvc.encoders import check_source, default_encoder, modality_of_records
    from embedsvc.errors import InvalidInputError

    from .data import labelled_records

    records = [r for r in labelled_records(data) if r.split in (None, "train")]
    modality = modality_of_records(records)
    backbone = backbone or default_encoder(modality)
    check_source(backbone, records, data)
    records, unreadable = readable(records, progress, modality)
    per_class = dict(sorted(Counter(r.label for r in records).items()))
    if len(per_class) < 2:
        raise InvalidInputError(f"{data}: {TWO_CLASSES}; it has "
                                f"{', '.join(map(repr, per_class)) or f'no readable {modality}'}")
    gap = domain_gap(data, target, backbone, progress=progress) if target else None
    rec = recommend(len(records), len(per_class), gap, per_class, unreadable, modality)
    if target is None and difference is None:
        return rec, None
    labels = target_labels_per_class(target, list(per_class)) if target else 0
    return rec, recommend_adaptation(gap, labels, difference)


def _readable_texts(records: list) -> tuple[list, list[tuple[str, str]]]:
    """Text records with a text to embed: a manifest's cell, or a .txt file that reads as UTF-8
    (what embed-dataset reads)."""
    from embedsvc.text.encoder import read_text_record

    ok, bad = [], []
    for r in records:
        error = read_text_record(r.to_dict()).get("error")
        if error:
            bad.append((r.path, error))
        else:
            ok.append(r)
    return ok, bad
