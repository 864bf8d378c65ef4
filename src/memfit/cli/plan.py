"""`memfit plan MODEL --budget B`: what makes a training step fit, and proof with --verify."""

from __future__ import annotations

from memfit.cli._common import add_html_report_flag, add_json_flag, print_json
from memfit.cli._model_args import add_model_args, resolve_workload

EXIT_OVER_BUDGET = 3


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "plan", help="find the fastest techniques that make a step fit a budget"
    )
    add_model_args(parser, optimizers=("sgd", "adam", "adamw"))
    parser.add_argument("--budget", required=True, help="a size (12GB, 16GiB) or a preset (colab)")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="only techniques that keep training exact (no bf16, no low-bit state)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="apply the plan, run 3 real steps, report the measured peak "
        f"(exit {EXIT_OVER_BUDGET} if it exceeds the budget)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-offload", action="store_true", help="never offload state to disk")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="ranks sharing the model states (FSDP): memory is per rank and "
        "--batch-size is each rank's batch",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="TECHNIQUE",
        help="also offer a technique that changes what is learned: lora (LoRA/QLoRA adapters "
        "on a frozen model, through peft)",
    )
    parser.add_argument(
        "--reserve",
        default=None,
        help="memory kept for the runtime itself (default 400MB on CPU, 1GB on GPU)",
    )
    parser.add_argument(
        "--emit",
        choices=["hf-trainer", "lightning"],
        default=None,
        help="also print the plan as Python: TrainingArguments for Hugging Face Trainer, "
        "or a Lightning Trainer with memfit's callback",
    )
    add_html_report_flag(parser)
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.budget import Budget
    from memfit.errors import PlanError
    from memfit.planning import plan

    if args.precision != "fp32":
        raise PlanError(
            "the planner chooses the precision itself; drop --precision (use --exact to keep fp32)"
        )
    if args.emit and args.json:
        raise PlanError("--emit prints Python, --json one JSON object: give one of them")
    if args.verify and args.nodes > 1:
        raise PlanError(
            "--verify runs one process; check a sharded plan under torchrun with "
            "`torchrun --nproc-per-node 2 --standalone -m memfit.distributed.check`"
        )
    workload = resolve_workload(args)
    reserve = None
    if args.reserve is not None:
        reserve = (
            0 if args.reserve.strip().upper() in ("0", "0B") else Budget.parse(args.reserve).bytes
        )
    the_plan = plan(
        workload,
        args.budget,
        args.batch_size,
        args.exact,
        optimizer=args.optimizer,
        device=args.device,
        reserve_bytes=reserve,
        allow_offload=not args.no_offload,
        allow=args.allow,
        nodes=args.nodes,
    )
    verification = None
    if args.verify:
        from memfit.verification import verify

        verification = verify(the_plan, workload)
    if args.json:
        data = the_plan.to_dict()
        if verification is not None:
            data.update(verification.to_dict())
        print_json(data)
    else:
        from rich.console import Console

        from memfit.report.plan_table import print_plan

        console = Console()
        print_plan(the_plan, console)
        if verification is not None:
            console.print(verification.line())
    if args.emit:
        from memfit.integrations import emit_code

        print(emit_code(args.emit, the_plan, args.model))
    if args.report:
        from memfit.cli.report import write_plan_report_for

        write_plan_report_for(args, the_plan, workload, verification)
    if verification is not None and not verification.within_budget:
        return EXIT_OVER_BUDGET
    return 0
