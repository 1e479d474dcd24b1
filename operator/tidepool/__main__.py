"""``python -m tidepool`` is the ``tidepool`` command."""

from tidepool.cli import main

raise SystemExit(main())
