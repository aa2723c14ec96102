"""``python -m capbatch``: the same commands as the ``capbatch`` script."""

from capbatch.cli import main

if __name__ == "__main__":
    main()
