"""The `pktscope` command line.

Exit status (also in --help): 0 success (a truncated capture is still a success: what was read is
reported and a warning goes to stderr); 2 bad input or usage (missing/unreadable file, not a capture,
bad filter expression, bad option, unknown interface, missing privilege); 130 interrupted (SIGINT),
after the report of what was read so far.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

from pktscope import __version__

if TYPE_CHECKING:
    from pktscope.app.export import ExportTarget

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


T = TypeVar("T", int, float)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _positive(convert: Callable[[str], T], what: str, bound: str) -> Callable[[str], T]:
    """An argparse type: `convert` the text, then require a value above zero."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be {bound}: {text}")
        return value

    return parse


_positive_int = _positive(int, "a whole number", "at least 1")
_positive_float = _positive(float, "a number", "greater than 0")


def _export_target(text: str) -> ExportTarget:
    from pktscope.app.export import parse_target

    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _domain_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 4294967295: {text}")
    return value


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    ex = parser.add_argument_group("flow export (see the README's Export section)")
    ex.add_argument("--export", type=_export_target, metavar="URL",
                    help="send each ended flow as IPFIX records to a collector: ipfix://HOST:PORT (UDP), "
                         "ipfix+tcp://HOST:PORT (TCP; port 4739 by default), or write them as JSON lines: "
                         "jsonl:PATH")
    ex.add_argument("--export-domain", type=_domain_id, default=0, metavar="ID",
                    help="IPFIX observation domain id (default: 0; live worker N uses ID+N)")
    ex.add_argument("--export-rotate-mb", type=_positive_float, default=100.0, metavar="MB",
                    help="jsonl: start a new file (PATH.1, PATH.2, ...) when the current one would exceed "
                         "MB million bytes (default: 100)")


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


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (and exit status 2), as every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
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
    _add_export_options(read)
    read.add_argument("--no-progress", action="store_true",
                      help="no progress bar (it is shown on a terminal for files that take over a second)")
    read.add_argument("--tui", action="store_true",
                      help="show the result on the full-screen dashboard of `live` (keys as there; q quits "
                           "and prints the report)")

    live = sub.add_parser(
        "live",
        help="capture from a network interface (AF_PACKET, TPACKET_V3 rings, fanout workers)",
        description="Capture live traffic from IFACE with one or more worker processes, each with its own "
                    "AF_PACKET socket and TPACKET_V3 ring in one PACKET_FANOUT group, and report the same "
                    "tables as `read`, plus the kernel's packet and drop counters. Needs CAP_NET_RAW (root).",
        epilog="examples:\n  pktscope live eth0 --promisc\n  pktscope live eth0 'udp port 53' -c 1000 --json\n"
               "  pktscope live eth0 --workers auto -w /var/tmp/cap.pcap -C 100 -W 10\n\n"
               "With -w and several workers, worker N writes FILE with .wN before its suffix (cap.w0.pcap, "
               "cap.w1.pcap, ...);\ntogether they hold every captured frame exactly once (merge with "
               "`mergecap`). With one worker, FILE itself.\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    live.add_argument("interface", metavar="IFACE", help="network interface to capture on")
    live.add_argument("expression", nargs="*", metavar="EXPRESSION",
                      help="tcpdump filter expression, compiled by libpcap and attached in the kernel "
                           "(SO_ATTACH_FILTER) before the socket is bound")
    cap = live.add_argument_group("capture")
    cap.add_argument("--promisc", action="store_true",
                     help="promiscuous mode (a socket membership: the kernel undoes it when pktscope exits)")
    cap.add_argument("-s", "--snaplen", type=_positive_int, default=262144, metavar="N",
                     help="bytes kept of each frame (default: 262144, as tcpdump)")
    cap.add_argument("--ring-mb", type=_positive_int, default=None, metavar="N",
                     help="ring size per worker in MiB (default: 128, less where all workers' rings would "
                          "take over 1/16 of RAM)")
    cap.add_argument("--workers", default="1", metavar="N|auto",
                     help="worker processes; auto = one per CPU, each pinned to its CPU (default: 1)")
    cap.add_argument("--fanout", choices=("hash", "lb", "cpu", "rollover", "random", "qm"), default="hash",
                     help="how the kernel spreads frames over workers (default: hash, so both "
                          "directions of a flow meet in one worker)")
    cap.add_argument("--fanout-defrag", action="store_true",
                     help="reassemble IP fragments before fanout hashing, so fragments follow their flow")
    stop = live.add_argument_group("stopping (SIGINT and SIGTERM also stop and report)")
    stop.add_argument("-c", "--count", type=_positive_int, metavar="COUNT", help="stop after COUNT frames")
    stop.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    wr = live.add_argument_group("writing frames (as tcpdump -w)")
    wr.add_argument("-w", "--write", metavar="FILE", help="write the captured frames to pcap FILE")
    wr.add_argument("-C", dest="file_size", type=_positive_float, metavar="MB",
                    help="start a new file when the current one exceeds MB million bytes (FILE, FILE1, ...)")
    wr.add_argument("-G", dest="rotate_seconds", type=_positive_int, metavar="SECONDS",
                    help="start a new file every SECONDS; FILE is a strftime pattern")
    wr.add_argument("-W", dest="file_count", type=_positive_int, metavar="N",
                    help="with -C: a ring of N files; with -G: stop writing after N files")
    ebpf = live.add_argument_group("eBPF filter (one socket filter for every worker, maps pinned under "
                                   "/sys/fs/bpf/pktscope/RUN while the capture runs)")
    ebpf.add_argument("--block", action="append", metavar="PREFIX",
                      help="drop frames from or to this IPv4/IPv6 address or CIDR prefix in the kernel, before "
                           "they reach pktscope (repeatable; change it during the run with `pktscope block`)")
    ebpf.add_argument("--ebpf", action="store_true",
                      help="use the eBPF filter (counters, an empty blocklist) even without --block")
    ebpf.add_argument("--verbose", action="store_true", help="with an eBPF verifier error: print its log")
    live.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                      help="how often workers report and --json prints a line (default: 1)")
    live.add_argument("--no-tui", action="store_true",
                      help="no full-screen dashboard (the default when stdout is a terminal): one plain "
                           "summary line per interval, then the report")
    _add_analysis_options(live)
    _add_export_options(live)
    block = sub.add_parser(
        "block",
        help="change or show the blocklist of a running `pktscope live --ebpf/--block`",
        description="Add, delete or list blocked IPv4/IPv6 prefixes of a running capture's eBPF filter (its maps "
                    "pinned under /sys/fs/bpf/pktscope/RUN); the change applies to the next frame. `list` prints "
                    "each prefix and the frames it blocked. Run it in the capture's mount namespace.",
        epilog="examples:\n  pktscope block add 192.0.2.0/24 2001:db8::/32\n  pktscope block list\n"
               "  pktscope block del 192.0.2.0/24 --run 4242-123456\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    block.add_argument("action", choices=("add", "del", "list"), help="what to do")
    block.add_argument("prefixes", nargs="*", metavar="PREFIX", help="IPv4/IPv6 address or CIDR prefix")
    block.add_argument("--run", metavar="ID", help="run id (directory under /sys/fs/bpf/pktscope); default: the "
                                                   "only running capture")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pktscope` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # pktscope does no linear algebra: numpy's OpenBLAS need not start a thread per core at import,
    # which costs ~10 ms of wall and ~70 ms of CPU on another core (set before numpy is imported;
    # a value the user set is kept)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "read":
            from pktscope.app.read import run_read

            if args.tui and (args.json or args.csv):
                parser.error("--tui cannot be combined with --json or --csv")

            return run_read(args)
        if args.command == "block":
            from pktscope.app.live import run_block

            return run_block(args)
        if args.command == "live":
            from pktscope.app.live import run_live

            if args.workers != "auto" and not (args.workers.isdigit() and int(args.workers) > 0):
                parser.error(f"argument --workers: expected a number of workers or auto, not {args.workers!r}")
            if args.csv:
                parser.error("--csv is for `read`; use --json with live")
            return run_live(args)
    except UserError as exc:
        print(f"pktscope: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `pktscope read ... | head`: the reader went away, nothing to report
        sys.stderr.close()
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE
