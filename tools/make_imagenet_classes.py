"""Write zoo/data/imagenet_classes.json from the class lists inside timm's wheel.

timm (Apache-2.0) ships `timm/data/_info/imagenet_synsets.txt` (the 1,000 ImageNet-1k
WordNet ids in class-index order) and `imagenet_synset_to_lemma.txt` (their WordNet lemmas).
The JSON is a list of [synset, lemmas] in class-index order. Run once with the `oracle`
extra installed:

    python tools/make_imagenet_classes.py
"""

import json
import pathlib

import timm

INFO = pathlib.Path(timm.__file__).parent / "data" / "_info"
TARGET = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "data" / "imagenet_classes.json"


def main():
    synsets = (INFO / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(
        line.split("\t", 1)
        for line in (INFO / "imagenet_synset_to_lemma.txt").read_text().splitlines()
    )
    classes = [[synset, lemmas[synset]] for synset in synsets]
    TARGET.write_text(json.dumps(classes, indent=0) + "\n")
    print(f"wrote {len(classes)} classes to {TARGET}")


if __name__ == "__main__":
    main()
