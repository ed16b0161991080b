"""`python -m minivlm.bench`: the benchmark command (it lives in minivlm/tools/bench.py)."""

from .tools.bench import main

if __name__ == "__main__":
    main()
