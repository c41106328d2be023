"""``jrag gap -c CONFIG [-c DELTA ...] [--set KEY=VALUE ...] | --model DIR`` ``[--questions N]
[--candidates C] [--k K] [--split val|test] [--out FILE.json]``: the usefulness gap
(``joint_rag.gap``) of the system a config builds untrained (the off-the-shelf baseline, as
``jrag export --untrained`` builds it) or of an export, on a seeded sample of its questions."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from joint_rag import provenance
from joint_rag.commands.args import Parser, fail, set_flag

PROG = "jrag gap"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Where similarity and usefulness part ways: for a sample of questions, rank the "
        "retriever's top-C candidates by similarity and by usefulness (the generator's log-likelihood of "
        "the answer given each passage alone); report nDCG@k of the similarity order against usefulness "
        "gains (softmax of the log-likelihoods), how often the most similar passage is not the most "
        "useful one, and the log-likelihood it leaves on the table, with 95% bootstrap intervals.",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        action="append",
        default=None,
        help="experiment YAML (repeatable, applied in order as for jrag fit); builds the system untrained",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --config: set a dotted config key (VALUE is YAML), e.g. --set model.similarity=cosine",
    )
    parser.add_argument("--model", type=Path, default=None, help="an export folder instead of --config")
    parser.add_argument(
        "--questions", type=int, default=100, help="questions sampled from the split (default 100)"
    )
    parser.add_argument(
        "--candidates", type=int, default=10, help="C: the retriever's top-C per question (10)"
    )
    parser.add_argument("--k", type=int, default=None, help="nDCG cut-off (default C)")
    parser.add_argument(
        "--split", choices=("val", "test"), default="val", help="which split's questions (val)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="(question, passage) rows per generator pass"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the question sample and the bootstrap")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the full result (per question too) as JSON"
    )
    args = parser.parse_args(argv)
    if (args.model is None) == (not args.config):
        fail(PROG, "pass either --config (build the system untrained) or --model (an export folder)")
    if args.set and args.model is not None:
        fail(PROG, "--set applies to --config only")
    for cfg in args.config or []:
        if not cfg.is_file():
            fail(PROG, f"--config {cfg}: no such file")
    if args.model is not None and not args.model.is_dir():
        fail(PROG, f"--model {args.model}: no such folder; export a model with `jrag export` first")
    for name in ("questions", "candidates", "batch_size", "bootstrap"):
        if getattr(args, name) < 1:
            fail(PROG, f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    started = time.perf_counter()

    from joint_rag.atomic import write_json
    from joint_rag.gap import sample_questions, usefulness_gap

    system, data = _system_and_data(args)
    examples = getattr(data, args.split)
    if not examples:
        fail(PROG, f"the {args.split} split has no questions")
    examples = sample_questions(examples, args.questions, args.seed)
    system.attach_corpus(data.corpus)
    try:
        result = usefulness_gap(
            system,
            examples,
            num_candidates=args.candidates,
            k=args.k,
            batch_size=args.batch_size,
            resamples=args.bootstrap,
            seed=args.seed,
            show_progress=True,
        )
    except ValueError as err:
        fail(PROG, str(err))
    wall = time.perf_counter() - started
    result = {
        "command": " ".join(["jrag", "gap", *argv]),
        "configs": [str(c) for c in args.config or []],
        "overrides": list(args.set),
        "model": str(args.model) if args.model else None,
        "split": args.split,
        "sample_seed": args.seed,
        "corpus_size": len(data.corpus),
        "split_size": len(getattr(data, args.split)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "machine": provenance.machine(args.device),
        **result,
    }
    if args.out is not None:
        write_json(args.out, result)
    print(table(result))
    return 0


def _system_and_data(args):
    """The system (untrained from --config, or loaded from --model) and its data."""
    if args.model is not None:
        from joint_rag.pipeline import JointRAG

        system = JointRAG.from_pretrained(args.model, device=args.device).system
        return system, _export_source(args.model).load()
    from joint_rag.config import build

    overrides = [set_flag(PROG, item) for item in args.set]
    cli = build(args.config, overrides)
    return cli.model.system.to(args.device), cli.datamodule.source.load()


def _export_source(folder: Path):
    """The data source an export's config.yaml names (``data.source``: class_path, init_args)."""
    import importlib

    import yaml

    from joint_rag.artifact import CONFIG_FILE

    path = folder / CONFIG_FILE
    try:
        source = yaml.safe_load(path.read_text())["data"]["source"]
        module, _, name = source["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (
        OSError,
        UnicodeDecodeError,
        yaml.YAMLError,
        KeyError,
        TypeError,
        ImportError,
        AttributeError,
    ) as err:
        fail(PROG, f"{path}: cannot read data.source ({err}); pass the data with --config instead")
    return cls(**(source.get("init_args") or {}))


def table(result: dict) -> str:
    """The aggregates as a small text table."""
    lines = [
        f"usefulness gap: {result['questions']} questions, C={result['candidates']}, nDCG@{result['k']}, "
        f"generator reads {result['generator_mode']}, {result['wall_s']} s",
        f"{'metric':<24} {'mean':>8}   95% CI",
    ]
    for name, m in result["metrics"].items():
        label = name.replace("@k", f"@{result['k']}")
        lines.append(f"{label:<24} {m['mean']:>8.3f}   [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]  n={m['n']}")
    return "\n".join(lines)
