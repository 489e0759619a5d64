import sys

if __name__ == "__main__":  # not when a spawned worker re-imports this module
    from .cli import main

    sys.exit(main())
