"""`python -m pktscope` runs the command-line interface."""

from pktscope.app.cli import main

raise SystemExit(main())
