"""Write a TSV (path<TAB>ImageNet class index) for a folder of ImageNet photos whose file names
start with their WordNet id, e.g. ../shared/data/imagenet-sample, for `edgekit eval --data`.

    python tools/imagenet_sample_tsv.py ../shared/data/imagenet-sample \
        ../shared/data/imagenet-classes.tsv > /tmp/imagenet-sample.tsv
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(folder: str, classes_tsv: str) -> int:
    wnid_to_index = {}
    for line in Path(classes_tsv).read_text().splitlines():
        index, wnid, *_ = line.split("\t")
        wnid_to_index[wnid] = int(index)
    for photo in sorted(Path(folder).iterdir()):
        wnid = photo.name.split("_")[0]
        if wnid in wnid_to_index:
            print(f"{photo.resolve()}\t{wnid_to_index[wnid]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
