"""``client ...``: every RPC of a running server, printing the same JSON as the local commands."""
from __future__ import annotations

import argparse
import hashlib
import os
import re

from ..datasets.containers import read_input_bytes
from ..quantize import ENCODINGS
from . import output
from .common import (EXIT_ERROR, EXIT_OK, MAX_OOD_HELP, SERVER_ENV, TOKEN_ENV, InputError,
                     UsageError, command, err, existing_images, group, inputs_given,
                     non_negative_int, positive_float, positive_int, probability, text_options,
                     token, warn)

ID_BITS = 63  # Upsert ids are int64 and must be >= 0
UPSERT_BATCH = 64  # images per Upsert request: a progress step, and what one bad file re-sends
BAD_ITEM = re.compile(r"'#(\d+)(?: \(id \d+\))?'")  # how the server names an item it refused


def content_id(source: str | bytes) -> int:
    """An input's id from its bytes (``--content-ids``; an image file's, a text's UTF-8): the
    same input keeps its id, so upserting it again replaces it instead of adding a copy."""
    data = source if isinstance(source, bytes) else read_input_bytes(str(source))
    digest = hashlib.sha256(data).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - ID_BITS)


def _given(a) -> dict:
    """The images or texts (``texts=``, with their ids) a command was given."""
    inputs, ids, modality = inputs_given(a)
    return {"images": inputs} if modality == "image" else {"texts": inputs, "ids": ids}


def _embed(c, a):
    rows, resp = c.embed(**_given(a), backbone=a.backbone or "", timeout=a.timeout,
                         dimensions=a.dimensions or 0, encoding=a.encoding)
    return [output.embedding(v.id, row, resp.provenance.dim) for v, row in zip(resp.vectors, rows)]


def _embed_stream(c, a):
    rows = []
    for r in c.embed_stream(**_given(a), backbone=a.backbone or "", timeout=a.timeout):
        rows.append(output.embedding(r.vector.id, r.vector.values) if not r.error else
                    {"id": r.vector.id or None, "error": r.error})
    return rows


def _classify(c, a):
    return [output.classification(r["id"], r["label"], r["probability"], r["ood_score"],
                                  r["abstained"], r["top"])
            for r in c.classify(**_given(a), head=a.head, top_k=a.top,
                                abstain_below=a.abstain_below or 0.0, timeout=a.timeout,
                                max_ood_score=a.max_ood or 0.0)]


def _search(c, a):
    inputs, _, modality = inputs_given(a, "image")
    if len(inputs) != 1:
        raise UsageError(f"search takes one query; got {len(inputs)}")
    query = {"image" if modality == "image" else "text": inputs[0]}
    return [output.hit(h["id"], h["score"], h["metadata"])
            for h in c.search(a.index, **query, k=a.k, timeout=a.timeout)]


def upsert_files(args: list[str], label: str | None) -> list[tuple[str, str | None]]:
    """(file, label) for each image argument: a folder, tar shards, parquet or a ``datasets``
    folder gives every image in it, labelled as embed-dataset reads it (``DIR/<label>/<file>``,
    ``.cls``, a label column); ``--label`` wins."""
    from ..datasets.container_sources import is_container
    from ..datasets.sources import scan_source

    out = []
    for arg in args:
        if os.path.isdir(arg) or is_container(arg):
            out += [(r.path, label or r.label) for r in scan_source(arg)]
        else:
            out += [(p, label) for p in existing_images([arg], skip_bad=False)]
    if not out:
        raise InputError("no image to upsert")
    return out


def _upsert(c, a):
    if a.text or a.texts:
        if a.images:
            raise UsageError("give images or texts (--text/--texts), not both")
        texts, _, _ = inputs_given(a)
        ids = ([a.first_id + n for n in range(len(texts))] if a.first_id is not None else
               [content_id(t.encode()) if a.content_ids else None for t in texts])
        items = [{"id": i, "text": t, "metadata": {"label": a.label} if a.label else {}}
                 for i, t in zip(ids, texts)]
        return _upsert_batches(c, a, items, "text")
    files = upsert_files(a.images, a.label)
    if a.first_id is not None:
        ids = [a.first_id + n for n in range(len(files))]
    else:  # --content-ids, or None: the server assigns ids never used before
        ids = [content_id(p) if a.content_ids else None for p, _ in files]
    items = [{"id": i, "image": p, "metadata": {"path": str(p), **({"label": lab} if lab else {})}}
             for i, (p, lab) in zip(ids, files)]
    return _upsert_batches(c, a, items, "image")


def _upsert_batches(c, a, items: list[dict], kind: str) -> dict:
    """Upsert ``items`` in batches; an item the server refuses is named and left out."""
    from ..client import RpcError

    used, skipped, total = [], [], 0
    bar = _bar(len(items), f"upsert {a.index}", a)
    for lo in range(0, len(items), UPSERT_BATCH):
        batch = items[lo:lo + UPSERT_BATCH]
        while batch:
            try:
                r = c.upsert(a.index, batch, timeout=a.timeout, dimensions=a.dimensions or 0)
            except RpcError as exc:  # one bad file: name it, leave it out, send the rest
                bad = BAD_ITEM.search(exc.details() or "")
                if exc.code().name != "INVALID_ARGUMENT" or not bad or int(bad[1]) >= len(batch):
                    raise
                item = batch.pop(int(bad[1]))
                name = output.short(item[kind], 60) if kind == "text" else item[kind]
                reason = BAD_ITEM.sub(repr(name), exc.details(), count=1)
                warn(f"skipped: {reason}")
                skipped.append({"path": name, "reason": reason})
                continue
            used += list(r.ids)
            total = r.total
            break
        if bar is not None:
            bar.update(min(UPSERT_BATCH, len(items) - lo))
    if bar is not None:
        bar.close()
    if not used:
        raise InputError(f"no {kind} was upserted ({len(skipped)} could not be read)")
    return {"upserted": len(used), "total": total, "ids": used, "skipped": skipped}


def _bar(total: int, desc: str, a):
    if a.quiet or total <= UPSERT_BATCH:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)


def _delete(c, a):
    r = c.delete(a.index, a.ids, timeout=a.timeout)
    return {"deleted": r.deleted, "total": r.total}


def _models(c, a):
    info = c.info(timeout=a.timeout)
    defaults = (info.default_backbone, info.default_text_encoder)
    return [output.model(m.name, m.library, m.dim, m.input_size, m.weights, m.description,
                         m.name in defaults, m.loaded, m.family, m.modality or "image")
            for m in c.models(timeout=a.timeout)]


def _message_list(method):
    def call(c, a):
        from ..client import message_to_dict

        return [message_to_dict(m) for m in getattr(c, method)(timeout=a.timeout)]
    return call


def _info(c, a):
    from ..client import message_to_dict

    return message_to_dict(c.info(timeout=a.timeout))


def _drift(c, a):
    from ..client import message_to_dict

    return [message_to_dict(d) for d in c.drift(a.head or "", timeout=a.timeout)]


def _health(c, a):
    return {"status": c.health(timeout=a.timeout)}


def cmd_client(args: argparse.Namespace) -> int:
    from ..client import Client, RpcError

    if args.client_command in ("embed", "embed-stream", "classify", "search"):
        inputs_given(args, "image" if args.client_command == "search" else "images")
    with Client(args.server, token=token()) as c:
        try:
            result = args.call(c, args)
        except RpcError as exc:
            err(f"{exc.code().name}: {exc.details()}")
            return EXIT_ERROR
    output.print_json(result)
    if args.client_command == "health" and result["status"] != "SERVING":
        return EXIT_ERROR  # a container's health check reads only the exit code
    return EXIT_OK


ACTIONS = {
    "embed": ("embed images or texts (Embed)", ["embedsvc client embed cat.jpg dog.jpg",
                                                "embedsvc client embed --text 'a fine film'"],
              _embed),
    "embed-stream": ("embed many images over one stream (EmbedStream); a bad image gets its "
                     "error and the rest go on", ["embedsvc client embed-stream photos/*.jpg"],
                     _embed_stream),
    "classify": ("classify images or texts with a head (Classify)",
                 ["embedsvc client classify x.png --head digits --top 3",
                  "embedsvc client classify --texts reviews.txt --head movies"], _classify),
    "search": ("nearest neighbours of an image or a text in an index (Search)",
               ["embedsvc client search --index catalogue --image query.jpg -k 5",
                "embedsvc client search --index reviews --text 'slow but lovely' -k 5"], _search),
    "upsert": ("add images, or class-folder trees of them, to an index, creating it (Upsert); "
               "a file the server cannot read is named and left out",
               ["embedsvc client upsert --index photos photos/   # labels from folder names",
                "embedsvc client upsert --index catalogue shoes/*.jpg --label shoe",
                "embedsvc client upsert --index catalogue a.jpg b.jpg --first-id 1000",
                "embedsvc client upsert --index catalogue shoes/*.jpg --content-ids",
                "embedsvc client upsert --index reviews --texts reviews.txt --label positive"],
               _upsert),
    "delete": ("remove ids from an index (Delete)",
               ["embedsvc client delete --index catalogue 1000 1001"], _delete),
    "models": ("encoders the server knows, image and text (ListModels)",
               ["embedsvc client models"], _models),
    "heads": ("heads the server serves, and those that failed to load (ListHeads)",
              ["embedsvc client heads"], _message_list("heads")),
    "indexes": ("the server's indexes and their sizes (ListIndexes)",
                ["embedsvc client indexes"], _message_list("indexes")),
    "info": ("version, device, batching settings and counters, role and the snapshot served "
             "per index (GetInfo)",
             ["embedsvc client info --server gpu-box:50051"], _info),
    "drift": ("are each head's recent inputs still like its training data (GetDrift)",
              ["embedsvc client drift", "embedsvc client drift --head fmnist"], _drift),
    "health": ("the standard gRPC health check; exit 0 only when SERVING (a container's "
               "HEALTHCHECK)", ["embedsvc client health --timeout 3"], _health),
}


def register(sub) -> None:
    csub = group(sub, "client",
                 f"call a running embedsvc server (token from ${TOKEN_ENV}); prints JSON",
                 "client_command")
    for name, (help_, examples, call) in ACTIONS.items():
        c = command(csub, name, help_, examples, cmd_client,
                    description=f"{help_}. Prints JSON; the token, if the server needs one, is "
                                f"read from ${TOKEN_ENV}.")
        c.set_defaults(call=call)
        c.add_argument("--server", default=os.environ.get(SERVER_ENV) or "127.0.0.1:50051",
                       help=f"HOST:PORT of the server (default: ${SERVER_ENV}, else 127.0.0.1:50051)")
        c.add_argument("--timeout", type=positive_float, default=60.0, help="deadline in seconds")
        if name in ("embed", "embed-stream", "classify"):
            c.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
            text_options(c, name.split("-")[0])
        if name == "upsert":
            c.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR",
                           help="image files, or folders (every image below, labelled by its "
                                "class folder)")
            text_options(c, "upsert (each kept as the item's 'text')")
        if name in ("embed", "embed-stream"):
            c.add_argument("--backbone", help="encoder name (default: the server's default for "
                                              "images or for text)")
        if name in ("embed", "upsert"):
            c.add_argument("--dimensions", type=positive_int,
                           help="fewer dimensions, as one of the server's projected stores "
                                "gives them (serve.toml 'projections')" + (
                                    "; a new index keeps the projection" if name == "upsert" else ""))
        if name == "embed":
            c.add_argument("--encoding", choices=ENCODINGS, default="float",
                           help="int8: integers in [-127, 127] (compare by cosine); binary: "
                                "sign bits packed 8 to a byte (compare by Hamming)")
        if name == "drift":
            c.add_argument("--head", help="one head (default: every trained head)")
        if name == "classify":
            c.add_argument("--head", default="imagenet", help="head name on the server")
            c.add_argument("--top", type=positive_int, default=5, help="labels per image")
            c.add_argument("--abstain-below", type=probability, metavar="P",
                           help="answer 'unknown' below this top probability, in [0, 1]")
            c.add_argument("--max-ood", type=probability, metavar="S", help=MAX_OOD_HELP)
        if name in ("search", "upsert", "delete"):
            c.add_argument("--index", required=True, help="index (collection) name")
        if name == "search":
            q = c.add_mutually_exclusive_group(required=True)
            q.add_argument("--image", help="query image file")
            q.add_argument("--text", action="append", metavar="TEXT", help="query text")
            q.add_argument("--texts", metavar="FILE", help="a file holding one query line")
            c.add_argument("-k", type=positive_int, default=10, help="neighbours to return")
        if name == "upsert":
            ids = c.add_mutually_exclusive_group()
            ids.add_argument("--first-id", type=non_negative_int,
                             help="number the images from this id, replacing what those ids "
                                  "held (default: the server assigns ids never used, printed "
                                  "in the answer)")
            ids.add_argument("--content-ids", action="store_true",
                             help="take each id from the image's bytes: upserting the same "
                                  "image again replaces it")
            c.add_argument("--label", help="label metadata for every image (default: a folder "
                                            "argument's class folder names)")
            c.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "delete":
            c.add_argument("ids", nargs="+", type=non_negative_int, metavar="ID", help="ids to remove")
