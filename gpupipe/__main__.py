"""The `gpupipe` command and `python -m gpupipe`: the command line, loaded with the collector held back."""

import gc


def main() -> None:
    """Run the command line. Its imports (NumPy, Pillow, typer, the op and option registries) make
    most of the objects the process will ever hold, and they live as long as it does: the garbage
    collector ran about 80 times over them as they were made, and would walk them in every full
    collection after. It waits while they are made, then leaves them out of its walks (gc.freeze):
    20 ms of a small run's 0.3 s. Done here, in the program's entry, so that importing gpupipe.cli
    (a test, an application embedding its typer app) leaves the importer's collector alone."""
    gc.disable()
    try:
        from .cli import main as command_line
    finally:
        gc.freeze()
        gc.enable()
    command_line()


if __name__ == "__main__":
    main()
