"""Every capture of the shared real-world corpus through the library, checked against what tshark and capinfos
said about it (reference.tsv, see the corpus's SOURCES.md). Skipped where the corpus is absent (a user's clone).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from pktscope.analyzers.analysis import Analysis
from pktscope.app.read import analyse_reader
from pktscope.capture.files import open_capture

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
REFERENCE = CORPUS / "reference.tsv"

# link types pktscope decodes; a file qualifies for the conversation comparison when all of its link types are
# among these (`A+B` in the linktype column: a pcapng file mixing link types)
DECODED_LINKTYPES = {"EN10MB", "LINUX_SLL", "LINUX_SLL2", "RAW", "IPV4", "IPV6", "NULL", "LOOP"}
# files with these encapsulations are kept out of the comparison, as agreed; pktscope opens them too
# (decoders/tunnels.py) and agrees with tshark on all but tcpdump/arista_ether.pcap (Arista's timestamp EtherType
# 0xd28b in front of the MPLS/IPv4)
TUNNEL_FEATURES = {"gre", "mpls", "pppoe", "vxlan"}
CONVERSATIONS = ("ipv4", "ipv6", "tcp", "udp")
MIN_MATCH = 0.95

# Files where pktscope's four conversation counts differ from tshark's, each looked at with tshark -V / -T fields.
KNOWN_DIFFERENCES: dict[str, str] = {
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/null_loopback.pcap":
        "frame 3's NULL header 0f 00 08 00 is no BSD address family (tcpdump: 'AF Unknown'); tshark's packet-null.c "
        "takes a value above 1500 as an EtherType (0x0800) and finds IPv4/UDP",
    "tcpdump/ipv6-too-long-jumbo.pcap":
        "fuzzed hop-by-hop options (a CALIPSO option with a bad length): tshark's option parser throws before the "
        "IPv6 conversation tap; pktscope checks only the extension header's length and counts the pair",
    "tcpdump/ipv6_mobility_1.pcap":
        "Mobility header (135) ending the chain with No Next Header: tshark's packet-mip6.c never hands back to "
        "IPv6, so its conversation tap does not run; pktscope counts the IPv6 pair",
    "tcpdump/kday1.pcap":
        "EtherType IPv4 carrying a version-6 header: tshark dissects it as IPv6 anyway ('Bogus IPv4 version'); "
        "pktscope, like tcpdump ('wrong link-layer encapsulation'), calls it malformed",
    "tcpdump/mptcp-dss-oobr.pcap":
        "malformed MPTCP DSS option: tshark's TCP dissector throws before its conversation tap; the TCP header "
        "itself is whole and pktscope counts it",
    "tcpdump/of13_ericsson.pcapng":
        "OpenFlow 1.3 packet-in/packet-out messages carry whole Ethernet frames inside TCP: tshark counts their "
        "IPv4/UDP conversations too (pktscope opens tunnels, not application payloads)",
}


@dataclass
class Outcome:
    """What pktscope made of one corpus file."""

    row: dict[str, str]
    packets: int | None = None
    conversations: dict[str, int] | None = None
    error: str | None = None

    @property
    def eligible(self) -> bool:
        """Whether tshark's conversation counts are comparable: decoded link types, no tunnels, tshark read it."""
        row = self.row
        return (set(row["linktype"].split("+")) <= DECODED_LINKTYPES
                and not TUNNEL_FEATURES & set(row["features_tshark"].split(","))
                and row["ipv4_convs"] != "NA")

    @property
    def expected(self) -> dict[str, int]:
        return {name: int(self.row[f"{name}_convs"]) for name in CONVERSATIONS}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """Every file of reference.tsv read once through the library (open_capture, decode, Analysis)."""
    if not REFERENCE.is_file():
        pytest.skip(f"no shared corpus at {CORPUS} (it is not part of the repository)")
    with REFERENCE.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows, f"{REFERENCE} lists no files"
    results = {}
    for row in rows:
        outcome = Outcome(row)
        results[row["file"]] = outcome
        path = CORPUS / row["file"]
        if not path.is_file():
            outcome.error = "listed in reference.tsv but missing from the corpus"
            continue
        try:
            with open_capture(str(path)) as reader:
                analysis = Analysis()
                analyse_reader(reader, analysis)
                snap = analysis.finish()
        except Exception as exc:  # noqa: BLE001 - every failure is collected and reported below
            outcome.error = f"{type(exc).__name__}: {exc}"
            continue
        outcome.packets = snap.packets
        outcome.conversations = snap.conversations()
    return results


def test_every_file_reads_without_an_exception(outcomes: dict[str, Outcome]) -> None:
    failed = [f"{name}: {o.error}" for name, o in outcomes.items() if o.error]
    assert not failed, f"{len(failed)} of {len(outcomes)} files failed:\n" + "\n".join(failed)


def test_packet_counts_match_capinfos_on_every_file(outcomes: dict[str, Outcome]) -> None:
    wrong = [f"{name}: pktscope {o.packets}, reference {o.row['packets']} ({o.row['packets_source']})"
             for name, o in outcomes.items() if not o.error and o.packets != int(o.row["packets"])]
    assert not wrong, f"{len(wrong)} files with another packet count:\n" + "\n".join(wrong)


def test_conversations_match_tshark(outcomes: dict[str, Outcome]) -> None:
    eligible = {name: o for name, o in outcomes.items() if o.eligible and not o.error}
    assert len(eligible) >= 500, f"only {len(eligible)} files qualify: is the corpus complete?"
    differing = {name: o for name, o in eligible.items() if o.conversations != o.expected}
    unexplained = [f"{name}: pktscope {o.conversations}, tshark {o.expected}"
                   for name, o in differing.items() if name not in KNOWN_DIFFERENCES]
    assert not unexplained, (f"{len(unexplained)} files differ from tshark and are not in KNOWN_DIFFERENCES "
                             "(a regression, or a new difference to look into and explain):\n" + "\n".join(unexplained))
    matching = len(eligible) - len(differing)
    assert matching >= math.ceil(MIN_MATCH * len(eligible)), f"{matching} of {len(eligible)} files match tshark"


def test_known_differences_are_current(outcomes: dict[str, Outcome]) -> None:
    """Each KNOWN_DIFFERENCES entry names a comparable file that still differs (else the entry is stale)."""
    stale = []
    for name in KNOWN_DIFFERENCES:
        o = outcomes.get(name)
        if o is None or not o.eligible:
            stale.append(f"{name}: not a comparable file of reference.tsv")
        elif not o.error and o.conversations == o.expected:
            stale.append(f"{name}: now matches tshark {o.expected}; remove it from KNOWN_DIFFERENCES")
    assert not stale, "\n".join(stale)
