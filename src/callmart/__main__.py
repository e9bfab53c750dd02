"""`python -m callmart`: the same as the `callmart` command."""

from .cli import main

main()
