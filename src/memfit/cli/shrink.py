"""`memfit shrink IN [-o OUT]`: the smallest lossless dtypes of a CSV or Parquet table."""

from __future__ import annotations

from memfit.cli._common import add_json_flag


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "shrink",
        help="report (or write, with -o) a table in its smallest lossless dtypes",
        description="Read IN (.csv, .csv.gz or .parquet) in bounded memory and find each "
        "column's smallest dtype that keeps every value. With -o, write the "
        "shrunk table as Parquet; without, only report.",
    )
    parser.add_argument("input", metavar="IN", help="a .csv, .csv.gz or .parquet file")
    parser.add_argument("-o", "--output", metavar="OUT", help="the .parquet file to write")
    parser.add_argument(
        "--max-memory",
        default="512MB",
        metavar="B",
        help="memory this command may use, e.g. 256MB (default 512MB)",
    )
    parser.add_argument("--delimiter", default=",", help="field separator of a CSV (default ,)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.data._convert_report import print_report, run_with_progress
    from memfit.data.convert import convert

    result = run_with_progress(
        lambda progress: convert(
            args.input,
            args.output,
            max_memory=args.max_memory,
            delimiter=args.delimiter,
            progress=progress,
        ),
        quiet=args.json,
        label="shrinking",
    )
    print_report(result, args.json)
    return 0
