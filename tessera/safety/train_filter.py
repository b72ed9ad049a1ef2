"""Rebuild the prompt filter's classifier from the labelled prompts: `python -m tessera.safety.train_filter`.

Reads `data/prompts.tsv` (text, category, split, kind), adds one misspelled copy of every training
prompt (seeded by the prompt itself), fits a multinomial logistic regression (L-BFGS in float64
from zeros, so the result is deterministic), picks the categories' thresholds on the validation
split (`choose_thresholds`), and writes `prompt_filter.safetensors` with the data's SHA-256 in its metadata.

The first settings (L2 1e-4, benign class weighted 3x, a false positive costing 10 misses when picking
thresholds) were chosen on the validation split from L2 {1e-4, 3e-4, 1e-3} x benign weight {2, 3} x
false-positive cost {6, 10}: the lowest validation false-positive rate (0.009) at the highest recall
(0.995); the test split and the fresh sets were not used to choose them.
Round 3 (2,768 prompts) kept these settings without searching again: validation recall 0.986, FPR 0.012.
Round 4 (3,783 prompts, fresh3 folded in, 15 more languages) kept them too; the classifier reads
`classifier_text` (the cleaned prompt without camera wording) in training and at check time alike.
Round 5 (5,973 prompts: fresh4 folded in 70/30, 1,272 more in 23 languages) adds the concept features
(`concepts.py`) and reads the prompt without its allow-listed phrases. The concept value 0.5 (against 1.0)
and a false-positive cost of 15 (against 10, 17.5, 20) were chosen on the validation split: recall 0.974,
FPR 0.029 there (cost 17.5: 0.968, 0.026); pairs of concepts as further features did no better.
Round 6 (7,079 prompts: fresh5 folded in 70/30, 240 English how-tos and idioms) kept the concepts; with
the new data the cost was chosen again on validation from {6, 8, 10, 12.5, 15}: 10 (recall 0.974, FPR
0.034; 12.5: 0.967, 0.027; 15: 0.958, 0.022), favouring recall, the larger gap on fresh5.
Round 7 (9,188 prompts: fresh6 folded in 70/30, 707 benign prompts naming protected groups, sport and
idiom senses and mentioned names, 557 unsafe ones, in English and 21 languages) changes how thresholds are
chosen: on what `check` compares (the highest of the prompt's and its clauses' scores, prompts the lexicon
refuses counted as refused) and for all categories together against the overall rates, the median over
30 bootstrap resamples of the validation split. The cost was chosen by training without fresh6 and
scoring fresh6 with thresholds chosen on validation as here: cost 1.0 recall
0.984, FPR 0.036; 1.25 to 1.6: 0.979, 0.028; 1.7: 0.973, 0.022; 2.0: 0.963, 0.017 (hate 0.913). 1.5 is
in the middle of the range that meets both targets there; then fresh6 was folded in and the filter retrained.
Round 8 (11,038 prompts: fresh7 folded in 70/30, 580 benign near-misses and 421 unsafe prompts) checked the
cost the same way on fresh7 (trained without it): 1.25 and 1.5 recall 0.973, FPR 0.043; 1.75: 0.964, 0.043;
so 1.5 was kept.
Round 9 (13,028 prompts: fresh8 folded in 70/30, 607 benign near-misses and 417 unsafe prompts) kept the recipe.
Fine-tuning the encoder's top 2 or 4 layers with the head (AdamW, 8 epochs, from these weights) was tried with
fresh8 held out: recall 0.973, FPR 0.039 against 0.966, 0.034 and 0.972, 0.045 for this recipe at costs 2 and 1.5,
a gain within the noise of 440 benign prompts, so the linear classifier was kept.
Round 10 (the same 13,028 prompts) reads the encoder's third layer beside its last (`FilterConfig.layers`)
and weakens the L2 penalty from 1e-4 to 3e-6. Chosen on the validation split, with fresh9 (scored once by
round 9) as a second check, both without clause scoring (whole prompts only): last layer, L2 1e-4, cost 1.5
(round 9): validation recall 0.951, FPR 0.024; fresh9 0.979, 0.050. Adding the middle layer: 0.964, 0.023;
fresh9 0.979, 0.040 (layer 2 or 4 instead, or the max over tokens too, no better). With both layers and
cost 2.0, L2 1e-4 / 3e-5 / 1e-5 / 3e-6 / 1e-6: validation 0.962 / 0.968 / 0.970 / 0.975 / 0.976 recall at
FPR 0.022 / 0.019 / 0.016 / 0.018 / 0.017; fresh9 0.979 / 0.983 / 0.987 / 0.987 / 0.985 at 0.037 / 0.037 /
0.027 / 0.027 / 0.025; the last layer alone at 3e-6: 0.966, 0.013; fresh9 0.987, 0.027. Validation recall at
FPR 0.02 is 0.978 for both layers at 3e-6 and 0.973 for the last one alone. Cost 2.5 (at 3e-5): 0.963, 0.018.
fresh10, written after that without reading the filter's data, scored once: recall 0.981 (minors 0.931), FPR
0.031 (12 of 389), against 0.963 and 0.041 for round 9 (`benchmarks/results/safety_fresh10_*.json`). Five of
the 516 shapes-world prompts of `tessera eval`'s sets were refused, though (round 9: none), so the data then
got 600 shapes-world prompts in the rich training wordings, and fresh9 and fresh10 were folded in 70/30
(`benchmarks/fold_filter_rows.py`; 15,470 prompts), and the filter was retrained with these settings:
validation 0.969, 0.020; no shapes-world prompt refused. fresh11, written after that, scored once: recall 0.966
(minors 0.907), FPR 0.024 (9 of 371); of its 18 misses, 11 were in languages the lexicon did not have.
Round 11 added the plain words of ten more languages to the lexicon (`lexicon.tsv`) and kept these settings:
fresh12, written after that, scored once: recall 0.937 (minors 0.88), FPR 0.032 (12 of 373). Four of its misses
were sentences spelt out letter by letter ("k i l l h i m w i t h ..."), which `clean` joined into one
unreadable word; it now splits such runs into words (`normalize.split_words`), and the filter was retrained:
validation 0.971, 0.020; fresh12 (no longer held out) 0.951, 0.032.
Round 12 kept these settings. fresh13, written blind after round 11, scored once: recall 0.940 (hate 0.846), FPR
0.035 (14 of 400). Then fresh11, fresh12 and fresh13 were folded in 70/30, and the lexicon got words from
fresh13's misses (Bengali, Urdu, Amharic, Zulu, Ukrainian; "14 words", "blood and soil", "pro-ana") and allow
phrases (mental-health and suicide-prevention campaigns, gun safes, hunter education). fresh14, written blind
after that, scored once: recall 0.952 (minors 0.918), FPR 0.028 (11 of 390). That fit refused 4 of the 516
shapes-world prompts of `tessera eval`'s sets (held-out words: "obsidian all around it" -> violence), so 400
shapes-world prompts in every attribute word (`fold_filter_rows.py --world-words all`) were added (18,630
prompts) and the filter retrained: none of the 516 refused; validation 0.968, 0.017; test 0.985, 0.005; fresh14
(no longer blind) 0.950, 0.031.
Round 13 kept these settings. fresh15, written blind after round 12, scored once: recall 0.944 (hate 0.880), FPR
0.045 (18 of 399). fresh14 and fresh15 were folded in 70/30 and the lexicon got the plain words of their misses
(romanised Russian, Korean and Japanese; Swahili, Hungarian, Tagalog, Telugu, Punjabi, Hausa, Bulgarian, Czech;
"jailbait", "happy merchant", "blue whale challenge", "fgc-9"). fresh16, written blind after that, scored once:
recall 0.913 (self-harm 0.885), FPR 0.017 (7 of 405); 30 of its 48 misses are not in English (English rows:
recall 0.950; the others: 0.840), many in scripts the English MiniLM reads letter by letter (Georgian, Armenian,
Khmer, Sinhala, Burmese, Amharic, Gujarati), where only the lexicon's listed words can catch them.
Round 14 kept these settings. fresh16 was folded in 70/30, the lexicon got the words of its misses (25 languages,
"pthc", "exit bag", "great replacement"), `leet` reads short bare numbers as letters in prompts written mostly
in leetspeak ("4 w0m4n 3nd1ng 17 4ll"), and a name with a quoted nickname inside ("Dwayne 'The Rock' Johnson")
is matched without it. fresh17, written blind after that, scored once: recall 0.955 (violence 0.907, hate 0.908),
FPR 0.018 (7 of 388). That fit refused 4 of the 516 shapes-world prompts of `tessera eval`'s sets ("... with
obsidian all around it" -> violence 0.52: the clause scored alone), so 219 background fragments in other
phrasings ("emerald on every side", "surrounded by peach"; the paraphrase set's "all around it" left out) were
added and the filter retrained: none of the 516 refused; validation 0.969, 0.015; test 0.965, 0.005; fresh17
(never trained on) 0.945, 0.018.
Round 15 keeps that classifier and lowers the false-positive cost from 2.0 to 1.0 (`--thresholds-only` chooses
the thresholds again on the validation split). The cost was chosen on fresh17 (never trained on), from the
thresholds each cost gives on validation: cost 2.0 recall 0.945, FPR 0.018 (worst category 0.908); 1.5: 0.960,
0.018; 1.25: 0.960, 0.021; 1.0: 0.972, 0.026 (0.947); 0.75: 0.974, 0.026. 1.0 is the highest cost that met
both targets there. fresh18, written blind after that, scored once: recall 0.965 (worst category 0.932), FPR
0.038 (near-miss 0.059): neither target met. Afterwards, on fresh18 for comparison only: cost 2.0 gave 0.940,
0.026; 1.5 gave 0.957, 0.028. No cost meets both targets on fresh18: the classifier itself has to separate better.
Round 16 keeps cost 1.0. fresh17 and fresh18 were folded in 70/30, the lexicon got the words of their misses
(romanised Russian and Japanese, Arabic in Latin letters, Tagalog, Swahili, Finnish, Bengali, Urdu, Chinese;
"day of the rope", "barcode arms", "kms") and the "(((echo)))" rule, and 12 Vietnamese prompts with "từ từ"
(slowly; "tu tu" without tones, like "tự tử") were added after a near-miss test failed on one. fresh19, written
blind after the fold, scored once (by the fit before those 12 prompts): recall 0.976 (worst category violence
0.918), FPR 0.021 (near-miss 0.029), p50 12.7 ms: every target met.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tessera.safety.concepts import Concepts, concept_names
from tessera.safety.lexicon import CATEGORIES
from tessera.safety.prompt_filter import (
    CLASSES,
    FilterConfig,
    PromptFilter,
    classifier_text,
    features,
    vocabulary,
    weights_path,
)

log = logging.getLogger(__name__)
FP_COST = 1.0  # a refused benign prompt's share weighs as much as a missed unsafe one's (round 15, see above)
L2 = 3e-6  # the classifier's L2 penalty (round 10, see above)
RESAMPLES = 30  # bootstrap resamples of the validation split the thresholds are the median of
_KEYS = "qwertyuiopasdfghjklzxcvbnm"


@dataclass
class Row:
    text: str
    category: str
    split: str
    kind: str


def data_file(name: str = "prompts.tsv") -> Path:
    return Path(str(resources.files("tessera.safety").joinpath("data", name)))


def load_prompts(path: Path | None = None) -> list[Row]:
    path = path or data_file()
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Row(*line.split("\t")) for line in lines if line.strip() and not line.startswith("#")]


def misspell(text: str) -> str:
    """One or two words of four letters or more get a typo (drop, swap, double or replace a letter)."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    words = text.split()
    long_ = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    for i in rng.permutation(long_)[: 1 + int(rng.integers(2))]:
        w, j, op = words[i], int(rng.integers(1, len(words[i]) - 1)), int(rng.integers(4))
        words[i] = [
            w[:j] + w[j + 1 :],
            w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :],
            w[:j] + w[j] + w[j:],
            w[:j] + _KEYS[int(rng.integers(len(_KEYS)))] + w[j + 1 :],
        ][op]
    return " ".join(words)


def fit(
    x: torch.Tensor, y: torch.Tensor, l2: float = L2, benign_weight: float = 3.0, steps: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression. x (N, F), y (N,) -> W (C, F), b (C,).

    Classes are weighted to equal total weight, then the benign class by `benign_weight` more.
    """
    x, n_classes = x.double(), len(CLASSES)
    counts = torch.bincount(y, minlength=n_classes).double().clamp_min(1)
    class_w = len(y) / (n_classes * counts)
    class_w[0] *= benign_weight
    sample_w = class_w[y]  # (N,)
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(x @ w.T + b, y, reduction="none")
        loss = (ce * sample_w).sum() / sample_w.sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


def validation_scores(flt: PromptFilter, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What `check` compares with the thresholds, per prompt: (N,) True where the lexicon alone refuses, and
    (N, C) the classifier's probabilities (highest of the prompt's and its clauses'; 0 where the lexicon decided)."""
    lexical = np.zeros(len(prompts), dtype=bool)
    probs = np.zeros((len(prompts), len(CLASSES)), dtype=np.float32)
    for i, prompt in enumerate(prompts):
        _, p = flt.scores(prompt)  # p is None exactly when the lexicon refuses
        if p is None:
            lexical[i] = True
        else:
            probs[i] = p.numpy()
    return lexical, probs


def choose_thresholds(
    probs: np.ndarray,
    lexical: np.ndarray,
    labels: list[str],
    fp_cost: float = FP_COST,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """The seven thresholds that minimise, on the validation split, the share of unsafe prompts let through
    plus `fp_cost` times the share of benign prompts refused: the two figures the filter is measured by.

    probs (N, C) and lexical (N,) from `validation_scores`. A prompt is refused when any category reaches
    its threshold, so the thresholds are chosen together (`_descend`). One split's best thresholds swing
    with a handful of prompts (violence 0.25 on one version of the data, 0.42 on the next), so each is the
    median over `resamples` bootstrap resamples of the split (seeded: the same data gives the same result).
    """
    labels_arr = np.array(labels)
    rng = np.random.default_rng(seed)
    picks = (
        [np.arange(len(labels))]
        if resamples <= 1
        else [rng.integers(0, len(labels), len(labels)) for _ in range(resamples)]
    )
    chosen = np.array([_descend(probs[i], lexical[i], labels_arr[i] != "benign", fp_cost) for i in picks])
    return {c: float(np.round(np.median(chosen[:, k]), 3)) for k, c in enumerate(CATEGORIES)}


def _descend(probs: np.ndarray, lexical: np.ndarray, unsafe: np.ndarray, fp_cost: float, sweeps: int = 4) -> np.ndarray:
    """(K,) thresholds minimising missed rate + fp_cost * false-positive rate: coordinate descent from 0.5, each
    threshold in turn over a grid of 0.01, `sweeps` rounds; among equally good values the middle one."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    p = probs[:, 1:]  # (N, K) refusal categories only

    def cost(t: np.ndarray) -> float:
        refused = lexical | (p >= t).any(1)
        return float(np.mean(~refused[unsafe]) + fp_cost * np.mean(refused[~unsafe]))

    t = np.full(len(CATEGORIES), 0.5)
    for _ in range(sweeps):
        for k in range(len(CATEGORIES)):
            costs = np.array([cost(np.concatenate([t[:k], [g], t[k + 1 :]])) for g in grid])
            best = np.flatnonzero(np.isclose(costs, costs.min()))
            t[k] = grid[best[len(best) // 2]]
    return t


def data_digest(rows: list[Row]) -> str:
    return hashlib.sha256("\n".join(f"{r.text}\t{r.category}\t{r.split}" for r in rows).encode()).hexdigest()


def train(encoder, rows: list[Row], cfg: FilterConfig | None = None) -> dict:
    """Fit on the train split (plus misspelled copies), thresholds on val. Returns tensors and metadata."""
    cfg = cfg or FilterConfig()
    concepts = Concepts(concept_names(), vocabulary(encoder))
    train_rows = [r for r in rows if r.split == "train"]
    prompts = [r.text for r in train_rows] + [misspell(r.text) for r in train_rows]
    y = torch.tensor([CLASSES.index(r.category) for r in train_rows] * 2)
    w, b = fit(inputs(encoder, prompts, cfg, concepts), y)
    tensors = {"weight": w.contiguous(), "bias": b, "thresholds": torch.full((len(CATEGORIES),), 0.5)}
    meta = {k: str(v) for k, v in asdict(cfg).items()} | {
        "classes": ",".join(CLASSES),
        "concepts": ",".join(concepts.names),
        "data_sha256": data_digest(rows),
        "l2": str(L2),
        "fp_cost": str(FP_COST),
    }
    return with_thresholds(tensors, meta, encoder, rows)


def with_thresholds(tensors: dict, meta: dict[str, str], encoder, rows: list[Row]) -> dict:
    """The fitted classifier with its thresholds chosen on the validation split at `FP_COST`."""
    meta = meta | {"fp_cost": str(FP_COST)}
    flt = PromptFilter.from_tensors(tensors, meta, encoder)  # the thresholds are chosen on what the whole filter reads
    val = [r for r in rows if r.split == "val"]
    lexical, probs = validation_scores(flt, [r.text for r in val])
    thresholds = choose_thresholds(probs, lexical, [r.category for r in val])
    tensors = tensors | {"thresholds": torch.tensor([thresholds[c] for c in CATEGORIES])}
    return {"tensors": tensors, "metadata": meta, "thresholds": thresholds}


def inputs(encoder, prompts: list[str], cfg: FilterConfig, concepts: Concepts) -> torch.Tensor:
    """(B, F) classifier input of whole prompts, as `PromptFilter.check` builds it for a short prompt."""
    return features(encoder, [classifier_text(p) for p in prompts], cfg, concepts, prompts)


def main(argv: list[str] | None = None) -> int:
    from tessera.models.text import TextEncoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(weights_path()), help="where to write the weights (default: the packaged file)")
    p.add_argument(
        "--thresholds-only", action="store_true",
        help="keep the packaged classifier (trained on this data) and choose its thresholds again (seconds, not minutes)",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    rows = load_prompts()
    if args.thresholds_only:
        from safetensors import safe_open

        with safe_open(str(weights_path()), "pt") as f:
            tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        if meta.get("data_sha256") != data_digest(rows):
            raise SystemExit(
                f"{weights_path()} was trained on other data than {data_file()}; retrain without --thresholds-only"
            )
        result = with_thresholds(tensors, meta, TextEncoder(), rows)
    else:
        result = train(TextEncoder(), rows)
    save_file(result["tensors"], args.out, metadata=result["metadata"])
    log.info("wrote %s; thresholds %s", args.out, json.dumps(result["thresholds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
