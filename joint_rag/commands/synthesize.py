"""``jrag synthesize --description TEXT [--corpus DIR] [--n N] [--backbone NAME] --out FILE.jsonl``."""

from __future__ import annotations

from pathlib import Path

from joint_rag.commands.args import Parser, fail

PROG = "jrag synthesize"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Synthetic retrieval training data from a short domain description (arXiv 2307.02740): a "
        "causal LM writes a search query per passage (drawn from --corpus, or generated), and an instruction "
        "whose positive is that passage. Train on it with joint_rag.data.synthesized.SynthesizedSource.",
    )
    parser.add_argument("--description", required=True, help="a sentence or two describing the target domain")
    parser.add_argument(
        "--corpus", type=Path, default=None, help="BEIR folder (or corpus.jsonl) to draw passages from"
    )
    parser.add_argument("--n", type=int, default=64, help="items to generate (default: 64)")
    parser.add_argument(
        "--backbone",
        default="smollm2-135m",
        help="generating causal LM: a preset or a local HF folder (default: smollm2-135m)",
    )
    parser.add_argument("--no-instructions", action="store_true", help="queries only, no instructions")
    parser.add_argument("--seed", type=int, default=0, help="passage draw and sampling seed")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation call")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per query or instruction")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    args = parser.parse_args(argv)
    if args.corpus is not None and not args.corpus.exists():
        fail(PROG, f"--corpus {args.corpus}: no such file or folder")

    from joint_rag.data.formats import BeirSource
    from joint_rag.data.reading import DataError
    from joint_rag.models.backbones import BackboneError
    from joint_rag.synthesize import PromptLM, synthesize, write_synthesized

    corpus = None
    try:
        if args.corpus is not None:
            folder = args.corpus if args.corpus.is_dir() else args.corpus.parent
            corpus = BeirSource(folder).read_corpus()
        lm = PromptLM(args.backbone, args.device)
        result = synthesize(
            args.description,
            args.n,
            lm,
            corpus,
            instructions=not args.no_instructions,
            seed=args.seed,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
    except (DataError, BackboneError, ValueError) as err:
        fail(PROG, str(err))
    if not result.records:
        fail(PROG, f"all {args.n} generations were empty or repeated; try another --backbone or --seed")
    write_synthesized(args.out, result.records)
    print(
        f"{len(result.records)} records -> {args.out} (dropped: {result.dropped_empty} empty, "
        f"{result.dropped_repeated} repeated)"
    )
    return 0
