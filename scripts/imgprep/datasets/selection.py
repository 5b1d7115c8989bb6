"""Which images each dataset holds, and where: its shard lists, planned from the scan.

Deterministic by ``seed`` alone, and per image: an image's rank is the order digest the
scan already drew for it (bytes 8-16 of its keyed hash, ``sources.common.placer``), the
same in every dataset. Subsets (a count or fraction) take the lowest-ranked images,
held-out splits the highest: so with one seed, smaller subsets nest in larger ones and
no subset of any dataset shares an image with a held-out split of any dataset unless the
two together take more than the images there are. An image's shard is the same slot
modulo the dataset's shard count, its place in the shard the same order digest.

Per source split, in this order: the class list filters; each held-out split (name order)
takes its count or fraction of what is left, so held-out splits are disjoint from each
other and from every other split drawn from that source split; every other split takes
its count or fraction (all, by default) of what remains.
"""

from __future__ import annotations

import json
from collections import defaultdict

from imgprep.datasets import Dataset
from imgprep.errors import ConfigError
from imgprep.files.tables import INDEX_COLUMNS, LABEL_COLUMNS, table_bytes, table_lines

# (slot, order, line, class): what the scan keeps of each image (ScanResult.placed)
Row = tuple[int, bytes, str, str]


def dataset_index_dir(dataset: Dataset) -> str:
    """The dataset's planned lists, under index/ (relative): written with the index, so
    the index lock, dry-run copies and write-if-changed cover them."""
    return f"datasets/{dataset.name}"


def member_list_name(dataset: Dataset, split: str, shard: str) -> str:
    """The shard's member list under index/: the source's own when the dataset takes the
    source split as it is (no copy), else the dataset's."""
    if dataset.same_as_source(split):
        return f"{split}/{shard}.tsv"
    return f"{dataset_index_dir(dataset)}/{split}/{shard}.tsv"


def labels_name(dataset: Dataset, source_base: int) -> str:
    if dataset.own_labels(source_base):
        return f"{dataset_index_dir(dataset)}/labels.tsv"
    return "labels.tsv"


def downloads_name(dataset: Dataset) -> str:
    """URL lists: which source shards (download jobs) each of the dataset's shards reads."""
    return f"{dataset_index_dir(dataset)}/downloads.json"


def round_half_up(value: float) -> int:
    return int(value + 0.5)


def _take(rows: list[Row], spec: dict, key: str) -> list[Row]:
    """The lowest-ranked ``count`` or ``fraction`` of ``rows``, the highest-ranked for a
    held-out split (of each class with ``per_class``; a per-class fraction keeps at least
    one image of a class)."""
    if "count" not in spec and "fraction" not in spec:
        return rows
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row[3] if spec["per_class"] else ""].append(row)
    taken = []
    for _, members in sorted(groups.items()):
        members.sort(key=lambda row: (row[1], row[2]), reverse=spec["holdout"])
        if "count" in spec:
            n = spec["count"]
        else:
            n = round_half_up(spec["fraction"] * len(members))
            if spec["per_class"]:
                n = max(n, 1)
        taken.extend(members[:n])
    if not taken and rows:
        raise ConfigError(f"config key '{key}': takes none of {len(rows)} images")
    return taken


def select(dataset: Dataset, placed: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Per dataset split, the rows it holds (unsorted)."""
    chosen: dict[str, list[Row]] = {}
    classes = set(dataset.classes) if dataset.classes is not None else None
    by_source: dict[str, list[str]] = defaultdict(list)
    for split, spec in dataset.splits.items():
        by_source[spec["from"]].append(split)
    for source, names in by_source.items():
        rows = placed[source]
        if classes is not None:
            rows = [row for row in rows if row[3] in classes]
        for split in sorted(n for n in names if dataset.splits[n]["holdout"]):
            taken = _take(rows, dataset.splits[split], dataset.key(f"splits.{split}"))
            if len(taken) == len(rows):
                raise ConfigError(
                    f"config key '{dataset.key(f'splits.{split}')}': holds out all "
                    f"{len(rows)} images of split {source}, leaving none"
                )
            chosen[split] = taken
            held = {row[2] for row in taken}
            rows = [row for row in rows if row[2] not in held]
        for split in names:
            if not dataset.splits[split]["holdout"]:
                chosen[split] = _take(rows, dataset.splits[split], dataset.key(f"splits.{split}"))
    return chosen


def dataset_labels(dataset: Dataset, labels: list[tuple[int, int, str, str]]):
    """The dataset's label map: the source's order, its classes only, from its base."""
    names = [row[2] for row in labels]
    texts = {row[2]: row[3] for row in labels}
    if dataset.classes is not None:
        unknown = [c for c in dataset.classes if c not in texts]
        if unknown:
            raise ConfigError(
                f"config key '{dataset.key('classes')}': {len(unknown)} class(es) are not "
                f"in the source: {', '.join(unknown[:10])}"
            )
        wanted = set(dataset.classes)
        names = [n for n in names if n in wanted]
    base = dataset.config["labels"]["base"]
    return [(i, i + base, name, texts[name]) for i, name in enumerate(names)]


def plan_files(dataset: Dataset, source_config: dict, scan) -> dict[str, bytes]:
    """The dataset's own files under index/ (name -> content): the shard lists it does not
    share with the source, its label map when that differs, and for URL lists which
    source shards feed each of its shards."""
    files: dict[str, bytes] = {}
    if dataset.own_labels(source_config["labels"]["base"]):
        labels = dataset_labels(dataset, scan.labels)
        files[labels_name(dataset, source_config["labels"]["base"])] = table_bytes(
            LABEL_COLUMNS, labels
        )
    own = dataset.own_lists()
    chosen = select(dataset, scan.placed) if own else {}
    feeds: dict[str, dict[str, list[int]]] = {}
    for split, spec in dataset.splits.items():
        n, n_source = spec["shards"], dataset.source_shards[spec["from"]]
        if split not in own:
            feeds[split] = {f"{i:05d}": [i] for i in range(n)}
            continue
        rows = chosen[split]
        if not rows:
            raise ConfigError(
                f"config key '{dataset.key(f'splits.{split}')}': no images for split "
                f"'{split}' (drawn from source split {spec['from']})"
            )
        shards: list[list] = [[] for _ in range(n)]
        sources: list[set] = [set() for _ in range(n)]
        for slot, order, line, _ in rows:
            shards[slot % n].append((order, line))
            sources[slot % n].add(slot % n_source)
        for i, members in enumerate(shards):
            members.sort()
            name = f"{dataset_index_dir(dataset)}/{split}/{i:05d}.tsv"
            files[name] = table_lines(INDEX_COLUMNS, [line for _, line in members])
        feeds[split] = {f"{i:05d}": sorted(s) for i, s in enumerate(sources)}
    if source_config["source"]["type"] == "urls":
        files[downloads_name(dataset)] = (json.dumps(feeds, sort_keys=True) + "\n").encode()
    return files
