"""The `pktscope` command line.

Exit status (also in --help): 0 success (a truncated capture is still a success: what was read is
reported and a warning goes to stderr); 2 bad input or usage (missing/unreadable file, not a capture,
bad filter expression, bad option, unknown interface, missing privilege); 130 interrupted (SIGINT),
after the report of what was read so far.
"""

from __future__ import annotations

import argparse
import sys

from pktscope import __version__

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0    success (also for a capture file that ends mid-record: what was read is
       reported, with a warning on stderr)
  2    bad input: missing or unreadable file, not a pcap/pcapng file, bad filter
       expression, bad option
  130  interrupted by SIGINT; the report covers what was read until then
"""


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text}")
    return value


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
    fmt.add_argument("--csv", action="store_true", help="print one CSV row per flow on stdout instead of tables")
    out.add_argument("--top", type=_positive_int, default=10, metavar="N",
                     help="rows in each top-N table and JSON list (default: 10)")
    out.add_argument("--sort", choices=("bytes", "packets"), default="bytes",
                     help="rank talkers, conversations and ports by bytes or packets (default: bytes)")
    flows = parser.add_argument_group("flows")
    flows.add_argument("--idle-timeout", type=_positive_float, default=120.0, metavar="SECONDS",
                       help="a flow silent this long (in packet time) ends (default: 120)")
    flows.add_argument("--active-timeout", type=_positive_float, default=1800.0, metavar="SECONDS",
                       help="a flow older than this ends and a new one starts (default: 1800)")
    flows.add_argument("--max-flows", type=_positive_int, default=1_000_000, metavar="N",
                       help="cap on flows held at once; the least recently seen is evicted and counted "
                            "(default: 1000000)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pktscope",
        description="Packet capture and protocol analysis: flows, top talkers, conversations, protocols.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pktscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    read = sub.add_parser(
        "read",
        help="analyse a pcap or pcapng capture file",
        description="Analyse a pcap or pcapng file (format detected from its content, not its name): "
                    "capture summary, protocol breakdown, top talkers, top conversations, top ports.",
        epilog="examples:\n  pktscope read samples/mixed.pcap\n  pktscope read trace.pcapng 'tcp port 443' --top 20\n"
               "  pktscope read trace.pcap --json | jq .conversations\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    read.add_argument("file", metavar="FILE", help="capture file (pcap or pcapng)")
    read.add_argument("expression", nargs="*", metavar="EXPRESSION",
                      help="tcpdump filter expression (pcap-filter(7)), compiled by libpcap; only matching "
                           "frames are analysed. Quote it or give it as several words, as with tcpdump")
    _add_analysis_options(read)
    read.add_argument("--no-progress", action="store_true",
                      help="no progress bar (it is shown on a terminal for files that take over a second)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pktscope` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "read":
            from pktscope.app.read import run_read

            return run_read(args)
    except UserError as exc:
        print(f"pktscope: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `pktscope read ... | head`: the reader went away, nothing to report
        sys.stderr.close()
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE
