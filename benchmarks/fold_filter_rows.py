"""Add rows to the prompt filter's data (tessera/safety/data/prompts.tsv) for a retraining round.

    python benchmarks/fold_filter_rows.py --world 600 --fold fresh9 fresh10
    python benchmarks/fold_filter_rows.py --new fresh13 /path/to/blind_set.tsv
    python benchmarks/fold_filter_rows.py --world 400 --world-words all --world-seed 11   # round 12

--new NAME FILE: a blind test set becomes tessera/safety/data/prompts_NAME.tsv, without its rows that are
    already in the data or in another fresh set (same text, case and spacing aside), with a comment saying
    how many went; score it once (benchmarks/safety.py --sets ... NAME), then fold it in a later round.

--world N: N benign prompts about the bundled model's own world (coloured shapes on plain
    backgrounds) in the rich *training* wordings and sentence shapes of
    tessera/data/world/vocab/wording.json, one or two objects, a quarter with typos; kind "world",
    70/30 train/val. The held-out wordings stay out, so `tessera eval --set paraphrase` remains a test
    of the filter too (none of its prompts may be refused).
--fold NAME...: a scored fresh set (prompts_NAME.tsv) joins the data 70/30 train/val, and its file is
    removed. Rows already in the data (same text, case and spacing aside) are skipped.

Splits are drawn from a generator seeded by each row's text, so a rerun makes the same file.
"""

from __future__ import annotations

import argparse
import re
import zlib
from pathlib import Path

import numpy as np

from tessera.data.world.scenes import BACKGROUNDS, all_combos
from tessera.data.world.wording import background_phrase, object_phrase, sentence, typo
from tessera.safety.train_filter import data_file, load_prompts

TYPO_SHARE = 0.25
TYPO_RATE = 0.15
TRAIN_SHARE = 0.7


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _split(text: str) -> str:
    return "train" if np.random.default_rng(zlib.crc32(text.encode())).random() < TRAIN_SHARE else "val"


def world_prompts(n: int, seed: int = 10, words: str = "train") -> list[str]:
    """n prompts of one or two shapes-world objects in the training sentence shapes; attribute words from `words`
    ("train", or "all": the held-out words too, as `tessera train --wording full` reads them)."""
    rng = np.random.default_rng(seed)
    combos = all_combos()
    out: list[str] = []
    while len(out) < n:
        picks = [combos[int(rng.integers(len(combos)))] for _ in range(1 if rng.random() < 0.7 else 2)]
        objs = " and ".join(object_phrase(c, s, m, rng, words) for c, s, m in picks)
        background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
        text = sentence(objs, background_phrase(background, rng, words), rng, words)
        out.append(typo(text, rng, TYPO_RATE) if rng.random() < TYPO_SHARE else text)
    return out


def add_fresh(name: str, source: str, seen: set[str]) -> None:
    """Copy a blind test set to prompts_NAME.tsv, leaving out rows whose text is in `seen` or another fresh set."""
    if data_file(f"prompts_{name}.tsv").exists():
        raise SystemExit(f"prompts_{name}.tsv exists already; pick a new name for a new set")
    for other in data_file().parent.glob("prompts_*.tsv"):
        seen |= {_key(r.text) for r in load_prompts(other)}
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if line.strip() and not line.startswith("#")]
    kept = [line for line in rows if _key(line.split("\t")[0]) not in seen]
    note = f"# {len(rows) - len(kept)} rows also in prompts.tsv or another fresh set (same text, case and spacing aside) removed."
    data_file(f"prompts_{name}.tsv").write_text("\n".join([*comments, note, *kept]) + "\n", encoding="utf-8")
    print(f"wrote prompts_{name}.tsv: {len(kept)} rows, {len(rows) - len(kept)} left out as already present")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=0, help="shapes-world prompts to add")
    ap.add_argument(
        "--world-words", choices=("train", "all"), default="train",
        help="their attribute words: the vocabularies' train half, or all (sentence shapes stay the train ones)",
    )  # fmt: skip
    ap.add_argument("--world-seed", type=int, default=10, help="seed of the shapes-world prompts")
    ap.add_argument("--fold", nargs="*", default=[], help="fresh sets to fold in (prompts_NAME.tsv)")
    ap.add_argument("--new", nargs=2, metavar=("NAME", "FILE"), help="add a blind test set as prompts_NAME.tsv")
    args = ap.parse_args()
    path = data_file()
    seen = {_key(r.text) for r in load_prompts(path)}
    if args.new:
        add_fresh(*args.new, seen)
        if not (args.world or args.fold):
            return
    rows: list[str] = []

    def add(text: str, category: str, kind: str) -> None:
        if "\t" in text or _key(text) in seen:
            return
        seen.add(_key(text))
        rows.append(f"{text}\t{category}\t{_split(text)}\t{kind}")

    for text in world_prompts(args.world, args.world_seed, args.world_words):
        add(text, "benign", "world")
    folded = []
    for name in args.fold:
        fresh = data_file(f"prompts_{name}.tsv")
        for r in load_prompts(fresh):
            add(r.text, r.category, r.kind)
        folded.append(fresh)
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(row + "\n" for row in rows))
    for fresh in folded:
        fresh.unlink()
    print(f"added {len(rows)} rows to {path}; folded {', '.join(args.fold) or 'no fresh set'}")


if __name__ == "__main__":
    main()
