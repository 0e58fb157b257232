"""`python -m edgekit`: the same as the `edgekit` command."""
from .cli.main import main

main()
