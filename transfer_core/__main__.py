import os
import sys

# TensorFlow's C++ start-up chatter hides our own messages on a terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":  # not when a spawned worker re-imports this module
    from .cli import main

    sys.exit(main())
