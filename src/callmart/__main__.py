"""The `callmart` command (and `python -m callmart`): Arrow's allocator chosen for the process before Arrow
loads, then the command line."""

from . import allocator


def main() -> None:
    """Run the command line in a process of its own."""
    allocator.choose_for_process()
    from .cli import main as command_line

    command_line()


if __name__ == "__main__":
    main()
