"""pktscope: packet capture and protocol analysis for Linux."""

__version__ = "0.1.0"
