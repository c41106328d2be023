"""``jrag export --ckpt PATH --out DIR [--config CFG] [--metrics JSON] [--overwrite]``, or
``jrag export --untrained --config CFG [--config DELTA ...] --out DIR [--set KEY=VALUE ...]``.

The folder is written atomically: an error, Ctrl-C or SIGTERM (exit 143) leaves no partial
output, and the temporary folder of an export killed outright (SIGKILL) is removed by the next
export to the same ``--out``."""

from __future__ import annotations

import json
from pathlib import Path

from joint_rag.commands.args import Parser, fail, set_flag

PROG = "jrag export"


def main(argv: list[str]) -> int:
    parser = Parser(
        prog=PROG,
        description="Export a trained checkpoint into a self-describing folder (safetensors, JSON, "
        "tokenizers, index, corpus, model card) that JointRAG.from_pretrained loads.",
    )
    parser.add_argument(
        "--ckpt", type=Path, help="Lightning .ckpt written by `jrag fit` (e.g. .../last.ckpt)"
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="export the system --config builds, without training (an off-the-shelf baseline)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --untrained: set a dotted config key (VALUE is YAML), e.g. --set model.similarity=cosine; "
        "passed to LightningCLI as --KEY=VALUE; repeatable",
    )
    parser.add_argument("--out", required=True, type=Path, help="export folder to create")
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        default=None,
        help="experiment YAML (repeatable: applied in order, as -c for jrag fit); default for --ckpt: "
        "the config.yaml saved with the run",
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help='JSON file for the model card, e.g. {"before": {...}, "after": {...}}',
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    if args.untrained == (args.ckpt is not None):
        fail(PROG, "pass either --ckpt (a trained run) or --untrained with --config")
    if args.set and not args.untrained:
        fail(PROG, "--set applies to --untrained exports only")
    if args.untrained and not args.config:
        fail(PROG, "--untrained needs --config (the experiment YAML that builds the system)")
    if args.ckpt is not None and args.config and len(args.config) > 1:
        fail(PROG, "--ckpt takes one --config (the run's config.yaml)")
    if args.ckpt is not None and not args.ckpt.is_file():
        fail(PROG, f"--ckpt {args.ckpt}: no such file; pass the .ckpt written by `jrag fit`")
    for cfg in args.config or []:
        if not cfg.is_file():
            fail(PROG, f"--config {cfg}: no such file")
    metrics = None
    if args.metrics is not None:
        try:
            metrics = json.loads(args.metrics.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            fail(PROG, f"--metrics {args.metrics}: not a readable JSON file ({err})")
        if not isinstance(metrics, dict):
            fail(PROG, f"--metrics {args.metrics}: expected a JSON object of metrics")
    overrides = [set_flag(PROG, item) for item in args.set]

    from joint_rag.atomic import terminate_as_interrupt
    from joint_rag.export import export_checkpoint, export_untrained

    with terminate_as_interrupt(PROG):  # SIGTERM removes the temporary folder, as Ctrl-C does
        if args.untrained:
            out = export_untrained(
                args.config, args.out, overrides, metrics=metrics, overwrite=args.overwrite
            )
            what = f"{' + '.join(map(str, args.config))} (untrained)"
        else:
            cfg = args.config[0] if args.config else None
            out = export_checkpoint(args.ckpt, args.out, cfg, metrics=metrics, overwrite=args.overwrite)
            what = str(args.ckpt)
    print(f"exported {what} -> {out}")
    return 0
