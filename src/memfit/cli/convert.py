"""`memfit convert IN.csv[.gz] OUT.parquet`: stream a big file into a shrunk Parquet file."""

from __future__ import annotations

from memfit.cli._common import add_json_flag


def add_table_input_args(parser) -> None:
    """Flags shared by `convert` and `shrink`: the bound and how to read the input."""
    parser.add_argument(
        "--max-memory",
        default="512MB",
        metavar="B",
        help="memory this command may use, e.g. 256MB or 1GiB (default 512MB)",
    )
    parser.add_argument("--delimiter", default=",", help="field separator of a CSV (default ,)")
    parser.add_argument(
        "--encoding",
        default=None,
        metavar="NAME",
        help="text encoding of a CSV, e.g. latin-1 or cp1252 (default utf-8)",
    )
    parser.add_argument(
        "--compression",
        default="zstd",
        choices=("zstd", "snappy", "lz4", "gzip", "brotli", "none"),
        help="Parquet compression of the output (default zstd)",
    )
    parser.add_argument(
        "--compression-level", type=int, default=None, metavar="N", help="codec level (zstd: 1-22)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N", help="parsing threads (default: cores)"
    )


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "convert",
        help="stream a CSV (or .csv.gz, or Parquet; a path or an s3://, gs://, https:// URL) "
        "into a shrunk Parquet file in bounded memory",
        description="Convert IN to Parquet chunk by chunk on every core, never loading it "
        "whole. Column types are decided over the whole file, then shrunk losslessly.",
    )
    parser.add_argument("input", metavar="IN", help="a .csv, .csv.gz or .parquet file, or a URL")
    parser.add_argument("output", metavar="OUT", help="the .parquet file to write")
    add_table_input_args(parser)
    parser.add_argument(
        "--no-shrink",
        action="store_true",
        help="keep the types pandas would read (int64, float64, str)",
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def convert_from_args(args, output, shrink: bool = True):
    """Run the conversion; SIGTERM/SIGHUP (already cleaned up after) exit with 128 + signal."""
    import sys

    from memfit.data._convert_output import Terminated
    from memfit.data.convert import convert

    try:
        return _convert(convert, args, output, shrink)
    except Terminated as stop:
        print(f"memfit: stopped by signal {stop.signum}; nothing was written", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None


def _convert(convert, args, output, shrink):
    return convert(
        args.input,
        output,
        max_memory=args.max_memory,
        shrink=shrink,
        delimiter=args.delimiter,
        encoding=args.encoding,
        compression=args.compression,
        compression_level=args.compression_level,
        workers=args.workers,
    )


def run(args) -> int:
    from memfit.data._convert_report import print_report

    print_report(convert_from_args(args, args.output, shrink=not args.no_shrink), args.json)
    return 0
