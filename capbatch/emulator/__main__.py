"""``python -m capbatch.emulator``: the ``serve`` command on its own."""

from capbatch.emulator._cli import serve

if __name__ == "__main__":
    serve(prog_name="python -m capbatch.emulator")
