"""The README's first command: the whole product, end to end, on real data.

1. the default backbone on real photos (scikit-image's): ImageNet labels, a similarity heat map;
2. a real labelled dataset (scikit-learn's digits) written as PNG folders, embedded into a store;
3. a logistic-regression head trained on the store, with its report;
4. the gRPC server started on a free port with that head, answering Classify for the test split
   and Search (after an Upsert of the training vectors) through the client; then a clean stop.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Named photos in scikit-image's bundled data (no download): what a person would expect to see.
PHOTOS = {
    "chelsea-cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "camera-man": "camera",  # grayscale: exercises the L → RGB path
    "hubble-deep-field": "hubble_deep_field",
}


def write_photos(out: Path) -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        sys.exit("embedsvc demo: scikit-image is needed for the demo photos: pip install scikit-image")
    from PIL import Image

    from PIL import ImageOps

    out.mkdir(parents=True, exist_ok=True)
    images = {name: Image.fromarray(getattr(skimage.data, attr)()) for name, attr in PHOTOS.items()}
    # Two edited copies: a good embedding puts each next to its original.
    images["chelsea-cat-mirrored"] = ImageOps.mirror(images["chelsea-cat"])
    w, h = images["coffee"].size
    images["coffee-cropped-jpeg"] = images["coffee"].crop((w // 8, h // 8, w - w // 8, h - h // 8))
    paths = []
    for name, img in images.items():
        path = out / (f"{name}.jpg" if name.endswith("jpeg") else f"{name}.png")
        if not path.exists():
            img.save(path, quality=70) if path.suffix == ".jpg" else img.save(path)
        paths.append(path)
    return paths


def save_heatmap(sim, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(sim, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if sim[i, j] > 0.6 else "white")
    ax.set_title("cosine similarity of effnet-lite0 embeddings")
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from .malloc import tune_malloc

    tune_malloc()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-out", type=Path)
    args = parser.parse_args(argv)

    from classifiers.heads.imagenet import ImageNetHead

    from . import cli
    from .backbones import DEFAULT_BACKBONE, create_backbone
    from .embeddings import Embeddings
    from .extract import ExtractConfig, FeatureExtractor

    print("== backbones (embedsvc models)")
    cli.main(["models"])

    paths = write_photos(args.out / "images")
    print(f"\n== {len(paths)} real photos written to {args.out / 'images'}")

    t0 = time.perf_counter()
    backbone = create_backbone(DEFAULT_BACKBONE)
    print(f"\n== loaded {backbone.name}: {backbone.cfg.architecture}, {backbone.cfg.dim}-d, "
          f"{backbone.cfg.num_params / 1e6:.1f} M params, weights sha256 "
          f"{backbone.cfg.weights_sha256[:16]}… ({time.perf_counter() - t0:.1f} s)")

    raw = FeatureExtractor(backbone, ExtractConfig(normalize=False))
    ids = [p.stem for p in paths]
    t0 = time.perf_counter()
    emb = raw.embed(paths, ids=ids)
    dt = time.perf_counter() - t0
    print(f"   embedded {len(emb)} images in {dt:.2f} s on {raw.plan.describe()}")

    print("\n== ImageNet predictions (the built-in 'imagenet' head), top 3")
    for p in ImageNetHead.from_backbone(backbone).predict(emb, top=3):
        tops = "; ".join(f"{label.split(',')[0]} {prob:.0%}" for label, prob in p.top)
        print(f"   {p.id:<22} {tops}")

    import numpy as np

    unit = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    print("\n== nearest other photo in embedding space (cosine)")
    for i, id_ in enumerate(ids):
        order = [j for j in np.argsort(-sim[i]) if j != i]
        print(f"   {id_:<22} → {ids[order[0]]:<22} {sim[i, order[0]]:.3f}")
    heat = args.out / "similarity.png"
    save_heatmap(sim, ids, heat)
    normalized = Embeddings(unit.astype(np.float32), emb.ids,
                            {**emb.provenance, "normalized": True})
    npy = normalized.save(args.out / "embeddings.npy")
    print(f"\n== wrote {heat} and {npy} (+ provenance in {npy.name}.json)")
    run_product(args.out)
    return 0


def run_product(out: Path) -> None:
    """Dataset → store → head → server → Classify and Search over gRPC → clean stop."""
    import shutil

    from classifiers.heads import TrainHeadConfig, train_head
    from embedsvc.client import Client
    from embedsvc.datasets.fetch import fetch_dataset
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server
    from embedsvc.store import EmbeddingStore, embed_dataset

    data, store_dir, serve_dir = out / "digits", out / "digits-store", out / "serve"
    counts = fetch_dataset("digits", data)
    print(f"\n== wrote scikit-learn's digits to {data}: train {counts['train']}, test {counts['test']}")
    report = embed_dataset(data, store_dir, progress=True)
    store = EmbeddingStore.open(store_dir)
    print(f"   embedded into {store_dir}: {store.count} vectors ({report.added} new, "
          f"{report.images_per_s:.0f} img/s)")
    head_dir = serve_dir / "heads" / "digits"
    if head_dir.exists():
        shutil.rmtree(head_dir)
    head = train_head(store_dir, head_dir, TrainHeadConfig(kind="logreg"), progress=False)
    print(f"== trained a logreg head: test accuracy {head.metrics['accuracy']:.3f} "
          f"(report: {head_dir / 'report' / 'report.md'})")

    server = Server(ServeConfig(port=0, data_dir=str(serve_dir))).start()
    target = f"127.0.0.1:{server.port}"
    print(f"== gRPC server listening on {target}")
    try:
        with Client(target) as client:
            test = [r for r in store.metadata() if r["split"] == "test"]
            correct = 0
            for start in range(0, len(test), 64):
                rows = test[start:start + 64]
                answers = client.classify([r["path"] for r in rows], head="digits", top_k=1,
                                          ids=[str(r["id"]) for r in rows], timeout=120)
                correct += sum(a["label"] == r["label"] for a, r in zip(answers, rows))
            print(f"   Classify over gRPC, {len(test)} test digits: accuracy {correct / len(test):.3f}")
            train = [r for r in store.metadata() if r["split"] == "train"]
            vectors = store.vectors()
            for start in range(0, len(train), 64):
                rows = train[start:start + 64]
                client.upsert("digits", [{"id": r["id"], "vector": vectors[r["id"]],
                                          "metadata": {"label": r["label"]}} for r in rows],
                              timeout=120)
            query = test[0]
            hits = client.search("digits", image=query["path"], k=5, timeout=60)
            labels = [h["metadata"]["label"] for h in hits]
            print(f"   Upsert of {len(train)} training vectors; Search with a test '{query['label']}' → "
                  f"neighbours labelled {labels}")
            info = client.info(timeout=30)
            print(f"   server batched {info.batching.images} images in {info.batching.batches} batches "
                  f"(largest {info.batching.largest_batch}) on {info.device}")
    finally:
        server.stop(grace=10)
    print("== server stopped cleanly")
    print("   next: .venv/bin/embedsvc serve --data-dir demo-out/serve   (then 'embedsvc client ...')")


if __name__ == "__main__":
    sys.exit(main())
