"""``python -m featlab <subcommand> ...``: the same as the ``featlab`` console script."""

from featlab.commands import main

raise SystemExit(main())
