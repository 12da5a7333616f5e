"""`python -m bds`: the `bds` command (bench workers start themselves this way)."""

from bds.cli import main

if __name__ == "__main__":
    main()
