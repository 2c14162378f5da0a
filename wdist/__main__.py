"""``python -m wdist``: the same command line as the ``wdist`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
