"""``python -m lightning_spectral`` is the ``lightning-spectral`` command."""

from lightning_spectral.cli import main

raise SystemExit(main())
