"""``datasets fetch``, ``embed-dataset``, ``index build|update``, ``search``, ``collection
import``: datasets become embedding stores, stores get FAISS indexes, indexes answer queries,
and a store becomes a served collection."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..backbones.registry import DEFAULT_BACKBONE
from ..text.catalog import DEFAULT_TEXT_ENCODER
from ..datasets.fetch import DATASETS
from ..index.planner import KINDS, REFINES
from . import output
from .common import (EXIT_OK, byte_size, columns_from, columns_options, command, decode_option,
                     device, group, inputs_given, UsageError, in_range, non_negative_int,
                     positive_int, runtime_option, warn)


def cmd_datasets_fetch(args: argparse.Namespace) -> int:
    from ..datasets.fetch import fetch_dataset

    counts = fetch_dataset(args.name, args.out, progress=not args.quiet, limit=args.limit)
    print(f"wrote {args.name} to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return EXIT_OK


def cmd_embed_dataset(args: argparse.Namespace) -> int:
    from ..store import EmbedDatasetConfig, embed_dataset, embed_dataset_ray

    config = EmbedDatasetConfig(
        backbone=args.backbone, weights=args.weights, batch_size=args.batch_size,
        workers=args.workers, shard_size=args.shard_size,
        dtype="float16" if args.float16 else "float32", dedup=args.dedup, device=args.device,
        tap=args.tap, decode=args.decode, runtime=args.runtime, columns=columns_from(args))
    args.on_interrupt = lambda: _committed(args.out)
    if args.engine == "ray":
        r = embed_dataset_ray(args.src, args.out, config, progress=not args.quiet,
                              stop_after_shards=args.max_shards, address=args.address,
                              actors=args.actors)
    else:
        if args.address or args.actors:
            raise UsageError("--address and --actors are for --engine ray")
        r = embed_dataset(args.src, args.out, config, progress=not args.quiet,
                          stop_after_shards=args.max_shards)
    print(f"{r.store}: added {r.added} vectors in {r.seconds:.1f} s ({r.images_per_s:.1f} "
          f"{r.unit}/s); {r.already_done} of {r.total_records} inputs were already done; "
          f"skipped {len(r.skipped)} (listed in {r.store}/errors.jsonl)")
    if r.truncated:
        from ..wording import count

        warn(f"{count(r.truncated, 'text')} longer than the encoder's token limit "
             f"{'was' if r.truncated == 1 else 'were'} cut to fit (each row says 'truncated'; "
             f"the store's manifest counts them)")
    for row in r.skipped[:10]:
        warn(f"skipped {row['path']!r}: {row['reason']}")
    if len(r.skipped) > 10:
        warn(f"... and {len(r.skipped) - 10} more")
    if r.small:
        from ..store.embed_job import SMALL_SIDE
        from ..wording import count

        warn(f"{count(len(r.small), 'image')} smaller than {SMALL_SIDE} px on a side "
             f"were embedded (scaled up, they carry little detail): "
             + ", ".join(f"{row['path']!r} ({row['width']}x{row['height']})"
                         for row in r.small[:5])
             + (f" and {len(r.small) - 5} more" if len(r.small) > 5 else ""))
    return EXIT_OK


def _committed(out) -> str:
    from ..errors import EmbedsvcError
    from ..store import EmbeddingStore
    from ..wording import count

    try:
        store = EmbeddingStore.open(out)
    except EmbedsvcError:
        return "nothing was stored; rerun the same command to start again"
    done = sum(s.inputs for s in store.shards)
    return (f"{count(done, 'input')} ({store.count} stored) are committed in {out}; "
            f"rerun the same command to resume")


def cmd_collection_import(args: argparse.Namespace) -> int:
    from ..collection.importer import check_servable, import_store
    from ..encoders import open_encoder
    from ..service.datadir import DataDir
    from ..store import EmbeddingStore

    store = EmbeddingStore.open(args.store)
    check_servable(store, open_encoder(store.provenance["backbone"]).binding())
    r = import_store(store, DataDir(Path(args.data_dir)).indexes, args.name,
                     progress=not args.quiet)
    resumed = f" (resumed at row {r.resumed_at})" if r.resumed_at else ""
    print(f"imported {r.count} vectors of {args.store} as index '{r.name}' in {r.path}{resumed}; "
          f"a server on {args.data_dir} serves it from its next request")
    return EXIT_OK


def cmd_snapshot_verify(args: argparse.Namespace) -> int:
    from ..collection.snapshot_read import verify_snapshot

    r = verify_snapshot(args.dir)
    print(f"{r['snapshot']}: whole ({r['files']} files, {r['bytes']:,} bytes of rows and index, "
          f"writes 1..{r['seq']}, {r['rows']:,} rows)")
    return EXIT_OK


def _index_engine(args: argparse.Namespace) -> dict:
    if args.engine != "ray" and args.address:
        raise UsageError("--address is for --engine ray")
    return {"workers": args.workers, "engine": args.engine, "address": args.address,
            "progress": not args.quiet}


def cmd_index_build(args: argparse.Namespace) -> int:
    from ..index.store_index import build_store_index
    from ..store import EmbeddingStore

    vi = build_store_index(EmbeddingStore.open(args.store), args.name, args.kind, args.recall,
                           args.memory_budget, args.refine, **_index_engine(args))
    i = vi.infos
    tuned = f", {i['search_param']}={i['search_param_value']}" if i.get("search_param") else ""
    refined = f" re-ranked with {i['plan']['refine']} vectors" if i["plan"].get("refine") else ""
    print(f"built {i['kind']} index '{args.name}' ({i['factory']}){refined} over {i['count']} "
          f"vectors in {i['build_seconds']:.1f} s{tuned}, recall@{i['k']}={i['recall_at_k']:.3f}")
    print(f"  memory {output.size(i['memory_bytes'])} (flat: {output.size(i['flat_memory_bytes'])}), "
          f"files {output.size(i['disk_bytes'])}")
    if not i.get("recall_target_met", True):
        warn(f"recall@{i['k']} {i['recall_at_k']:.3f} is below the target {args.recall:g} even at "
             f"the widest search setting; use --kind flat (exact), or more vectors per list")
    return EXIT_OK


def cmd_index_update(args: argparse.Namespace) -> int:
    from ..index.store_index import update_store_index
    from ..store import EmbeddingStore

    vi, added = update_store_index(EmbeddingStore.open(args.store), args.name, **_index_engine(args))
    print(f"index '{args.name}': added {added} new rows; {vi.ntotal} vectors")
    return EXIT_OK


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=positive_int,
                   help="IVF kinds: processes adding blocks of rows (default: one per CPU)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="IVF kinds: add the blocks in local processes or in Ray tasks (the store "
                        "and the index folder must be on storage every Ray node sees)")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_search(args: argparse.Namespace) -> int:
    from ..encoders import check_query
    from ..search import StoreSearcher

    query = None
    if args.image or args.text or args.texts:
        inputs, _, modality = inputs_given(args, "image")
        if len(inputs) != 1:
            raise UsageError(f"search takes one query; got {len(inputs)}")
        query = inputs[0]
    searcher = StoreSearcher(args.store, args.index)
    if query is not None:
        check_query(modality, searcher.store.provenance, f"store {args.store!r}")
    if searcher.unindexed:
        warn(f"index '{args.index}' was built before the last {searcher.unindexed} rows were added; "
             f"they were searched exactly (run 'embedsvc index update {args.store}')")
    where = {"label": args.label, "split": args.split, "domain": args.domain}
    if query is not None:
        hits = searcher.search_inputs([query], args.k, where)[0]
    else:
        hits = searcher.search_ids([args.id], args.k, where)[0]
    if args.json:
        output.print_json([output.hit(h.id, h.score, h.metadata) for h in hits])
        return EXIT_OK
    what = "TEXT" if searcher.store.provenance.get("modality") == "text" else "PATH"
    print(f"{'RANK':>4}  {'ID':>7}  {'SCORE':>6}  {'LABEL':<14}  {what}")
    for rank, h in enumerate(hits, 1):
        shown = output.short(h.metadata["text"], 80) if what == "TEXT" else h.path
        print(f"{rank:>4}  {h.id:>7}  {h.score:6.3f}  {str(h.label):<14}  {shown}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ..store.export import export_store

    r = export_store(args.store, args.out, args.format, args.overwrite)
    print(f"exported {r['rows']} vectors ({r['dim']}-d) of {r['store']} as {r['format']} to "
          f"{r['out']}")
    return EXIT_OK


def cmd_project(args: argparse.Namespace) -> int:
    from ..store.project import project_store

    r = project_store(args.store, args.out, args.dimensions, args.overwrite)
    print(f"{r['store']}: {r['rows']} vectors projected from {r['from_dim']} to {r['dim']} "
          f"dimensions ({r['kind']}); queries of it are projected the same way")
    return EXIT_OK


def register(sub) -> None:
    dsub = group(sub, "datasets", "write real labelled datasets from local packages",
                 "datasets_command")
    f = command(dsub, "fetch", "write NAME as image class folders (train/ and test/), or a text "
                "dataset as OUT/manifest.jsonl",
                ["embedsvc datasets fetch digits --out data/digits",
                 "embedsvc datasets fetch fashion-mnist --out data/fmnist --limit 500",
                 "embedsvc datasets fetch photos --out data/photos --limit 600",
                 "embedsvc datasets fetch sentiment-movies --out data/movies"],
                cmd_datasets_fetch)
    f.add_argument("name", choices=sorted(DATASETS), help="which dataset")
    f.add_argument("--out", required=True, help="output folder (an earlier fetch there is updated)")
    f.add_argument("--limit", type=positive_int,
                   help="only the first N items of each split (photos: N photos in all)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(sub, "embed-dataset", "embed a dataset into a resumable embedding store",
                ["embedsvc embed-dataset data/digits --out stores/digits",
                 "embedsvc embed-dataset data/movies/manifest.jsonl --out stores/movies",
                 "embedsvc embed-dataset photos.csv --out stores/photos --float16 --dedup",
                 "embedsvc embed-dataset big.csv --out stores/big --engine ray --address auto",
                 "embedsvc embed-dataset 'shards/{00000..00099}.tar' --out stores/laion",
                 "embedsvc embed-dataset reviews.parquet --text-column body --out stores/reviews"],
                cmd_embed_dataset)
    p.add_argument("src", help="class-folder tree, flat folder, .csv/.jsonl manifest (a 'text' "
                                "column, or .txt files, for text), webdataset .tar shards or "
                                ".parquet files (one, or a brace pattern or glob), or a folder "
                                "written by datasets' save_to_disk")
    p.add_argument("--out", "-o", required=True, help="store folder (created, or resumed/appended)")
    p.add_argument("--backbone", "-b", help=f"encoder name (default: {DEFAULT_BACKBONE} for "
                                            f"images, {DEFAULT_TEXT_ENCODER} for text)")
    p.add_argument("--weights", metavar="PATH", help="weight file instead of the packaged weights")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="decode threads ahead of the model (default: 0 on a 2-core CPU, else auto)")
    p.add_argument("--shard-size", type=positive_int, default=4096, help="vectors per shard file")
    p.add_argument("--float16", action="store_true", help="store vectors as float16 (half the disk)")
    p.add_argument("--dedup", action="store_true", help="skip files whose bytes are already stored")
    p.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tap", help="which features: pre_logits (images) or embedding (text), the "
                                 "default; or an earlier layer's (see 'embedsvc models')")
    decode_option(p)
    runtime_option(p)
    columns_options(p)
    p.add_argument("--max-shards", type=positive_int, help="stop after N shards (resume later)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray: Ray Data tasks decode, an actor pool "
                        "embeds; the same store either way (pip install 'embedsvc[ray]')")
    p.add_argument("--address", help="Ray cluster address (auto, or ray://host:10001; default: "
                                     "a local Ray instance for this run)")
    p.add_argument("--actors", type=positive_int,
                   help="embedding actors on Ray (default: one per GPU, else one per 4 CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    x = command(sub, "export", "write a store in the layouts other tools read",
                ["embedsvc export stores/photos --format clip-retrieval out/photos-emb",
                 "autofaiss build_index --embeddings out/photos-emb/img_emb --index_path knn.index",
                 "embedsvc export stores/movies --format parquet out/movies.parquet"],
                cmd_export)
    x.add_argument("store", help="embedding store folder")
    x.add_argument("out", help="the folder (clip-retrieval) or file (parquet) to write")
    x.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    x.add_argument("--format", required=True, choices=("clip-retrieval", "parquet"),
                   help="clip-retrieval: img_emb/ (or text_emb/) .npy + metadata/ .parquet, as "
                        "clip-retrieval writes and autofaiss reads; parquet: one file, an "
                        "'embedding' column plus metadata, provenance in its key-value metadata")

    pr = command(sub, "project", "make a store of fewer dimensions from STORE (PCA fitted on it, or "
                 "the first N where the encoder declares matryoshka dimensions)",
                 ["embedsvc project stores/movies --dimensions 128 --out stores/movies-128",
                  "embedsvc search stores/movies-128 --text 'a moving film'"], cmd_project)
    pr.add_argument("store", help="embedding store folder")
    pr.add_argument("--dimensions", type=positive_int, required=True, help="dimensions to keep")
    pr.add_argument("--out", "-o", required=True, help="the new store's folder")
    pr.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    isub = group(sub, "index", "build or update a store's FAISS index", "index_command")
    b = command(isub, "build", "(re)build an index over every row of STORE",
                ["embedsvc index build stores/digits",
                 "embedsvc index build stores/big --kind ivfpq --recall 0.9 --memory-budget 2G",
                 "embedsvc index build stores/big --kind binary --name bits",
                 "embedsvc index build stores/huge --memory-budget 8G --engine ray --address auto"],
                cmd_index_build)
    b.add_argument("store", help="embedding store folder")
    b.add_argument("--kind", choices=KINDS, default="auto",
                   help="auto picks flat, hnsw or ivfpq from the size and the memory budget; "
                        "ivf and ivfpq are built in blocks into inverted lists on disk; int8 "
                        "(1 byte a dimension) and binary (1 bit) are compact codes of every "
                        "vector, re-scored with the store's exact vectors")
    b.add_argument("--name", default="default", help="index name (several may live in a store)")
    b.add_argument("--recall", type=in_range(0.0, 1.0, lo_open=True), default=0.95,
                   help="recall@10 target the search setting is tuned to, in (0, 1]")
    b.add_argument("--memory-budget", type=byte_size, default="4G",
                   help="memory the index may use, e.g. 512M or 4G; it picks the kind and "
                        "the refinement")
    b.add_argument("--refine", choices=REFINES, default="auto",
                   help="ivfpq: re-rank the shortlist with 8-bit codes in memory (sq8) or the "
                        "store's exact vectors read from disk; auto: sq8 when it fits the "
                        "budget, else exact. int8 and binary: exact (auto) or none")
    _engine_options(b)
    u = command(isub, "update", "add rows appended to STORE since the index was built",
                ["embedsvc index update stores/digits"], cmd_index_update)
    u.add_argument("store", help="embedding store folder")
    u.add_argument("--name", default="default", help="index name")
    _engine_options(u)

    csub = group(sub, "collection", "turn a store into a served collection", "collection_command")
    c = command(csub, "import", "serve a store's vectors as a collection (index) of a data dir, "
                "without embedding again: its rows keep their ids and metadata",
                ["embedsvc collection import stores/photos --data-dir /srv/embedsvc --name photos"],
                cmd_collection_import)
    c.add_argument("store", help="embedding store folder (made by embed-dataset)")
    c.add_argument("--data-dir", required=True, help="the server's data dir (running or not)")
    c.add_argument("--name", required=True, help="the new index (collection) name")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    ssub = group(sub, "snapshot", "check a collection's published snapshot", "snapshot_command")
    v = command(ssub, "verify", "check that every file a collection's snapshot lists is there, "
                "whole (size and sha256): run it on a copy before a reader serves it",
                ["embedsvc snapshot verify /srv/embedsvc/indexes/photos",
                 "embedsvc snapshot verify copy/photos/snap-00000000000000000042-1a2b3c4d"],
                cmd_snapshot_verify)
    v.add_argument("dir", help="a collection folder (the snapshot its manifest names) or a "
                               "snapshot folder")

    p = command(sub, "search", "nearest neighbours in a store, by image, by text or by row",
                ["embedsvc search stores/digits --image query.png -k 5",
                 "embedsvc search stores/movies --text 'a slow, beautiful film' -k 5",
                 "embedsvc search stores/digits --id 42 --label 7 --json"], cmd_search)
    p.add_argument("store", help="embedding store folder")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", help="query image file")
    q.add_argument("--text", action="append", metavar="TEXT", help="query text")
    q.add_argument("--texts", metavar="FILE", help="a file holding one query line")
    q.add_argument("--id", type=non_negative_int, help="query with the vector of store row N")
    p.add_argument("-k", type=positive_int, default=10, help="neighbours to return")
    p.add_argument("--index", default="default", help="index name")
    p.add_argument("--label", help="only rows with this label")
    p.add_argument("--split", help="only rows of this split")
    p.add_argument("--domain", help="only rows of this domain")
    p.add_argument("--json", action="store_true", help="print JSON")
