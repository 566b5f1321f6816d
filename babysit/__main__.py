"""``python -m babysit``: the same as the ``babysit`` command."""

from babysit.cli import main_exit

if __name__ == "__main__":
    main_exit()
