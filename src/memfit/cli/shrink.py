"""`memfit shrink IN [-o OUT]`: the smallest lossless dtypes of a CSV or Parquet table."""

from __future__ import annotations

from memfit.cli._common import add_json_flag
from memfit.cli.convert import add_table_input_args


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "shrink",
        help="report (or write, with -o) a table in its smallest lossless dtypes",
        description="Read IN (.csv, .csv.gz or .parquet; a path or a URL) in bounded memory "
        "and find each column's smallest dtype that keeps every value. With -o, write the "
        "shrunk table as Parquet; without, only report.",
    )
    parser.add_argument("input", metavar="IN", help="a .csv, .csv.gz or .parquet file, or a URL")
    parser.add_argument("-o", "--output", metavar="OUT", help="the .parquet file to write")
    add_table_input_args(parser)
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.cli.convert import convert_from_args
    from memfit.data._convert_report import print_report

    print_report(convert_from_args(args, args.output), args.json)
    return 0
