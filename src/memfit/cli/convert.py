"""`memfit convert IN.csv[.gz] OUT.parquet`: stream a big file into a shrunk Parquet file."""

from __future__ import annotations

from memfit.cli._common import add_json_flag


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "convert",
        help="stream a CSV (or .csv.gz, or Parquet) into a shrunk Parquet file in bounded memory",
        description="Convert IN to Parquet chunk by chunk, never loading it whole. Column types "
        "are decided over the whole file, then shrunk losslessly.",
    )
    parser.add_argument("input", metavar="IN", help="a .csv, .csv.gz or .parquet file")
    parser.add_argument("output", metavar="OUT", help="the .parquet file to write")
    parser.add_argument(
        "--max-memory",
        default="512MB",
        metavar="B",
        help="memory this command may use, e.g. 256MB or 1GiB (default 512MB)",
    )
    parser.add_argument(
        "--no-shrink",
        action="store_true",
        help="keep the types pandas would read (int64, float64, str)",
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
            shrink=not args.no_shrink,
            delimiter=args.delimiter,
            progress=progress,
        ),
        quiet=args.json,
        label="converting",
    )
    print_report(result, args.json)
    return 0
