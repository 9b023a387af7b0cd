"""`python -m facesocial ...` runs the CLI."""

from facesocial.cli import main

main()
