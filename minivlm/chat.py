"""`python -m minivlm.chat`: a conversation on the terminal, streamed, that remembers its images.

    python -m minivlm.chat                              # the embedded demo model
    python -m minivlm.chat --model jinaai/jina-vlm      # the real model (downloaded into the Hugging Face cache)

    > /image minivlm/tiny/minivlm-tiny/example.png
    > What color is the circle?
    green
    > What shape is green?
    circle

Each line is a question, answered as it is generated; `/image PATH` attaches an image to the next question
(repeat it for several), `/reset` starts a new conversation, `/exit` or the end of the input quits. Ctrl-C stops
an answer and the conversation goes on (the part already written stays in it); at the prompt it clears the line.
Questions are read from standard input line by line, so a conversation can be scripted:

    printf '/image photo.jpg\nWhat is in this image?\nWhat colour is it?\n' | python -m minivlm.chat --model ...

Answers go to standard output, one per line; notes and errors to standard error. The conversation keeps its KV
cache between turns (`minivlm/conversation.py`): a follow-up question runs only its own tokens through the
model, and each image is encoded once. Model options are `python -m minivlm.generate`'s.
"""

from __future__ import annotations

import argparse
import sys

from .generate import (
    OneLineParser,
    add_model_options,
    add_sampling_options,
    check_model_args,
    load_model,
    open_images,
    print_error,
    run_main,
    sampling_kwargs,
)

COMMANDS = "/image PATH attaches an image to the next question, /reset starts over, /exit quits"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m minivlm.chat", description=__doc__.split("\n\n")[0],
                                epilog=COMMANDS)
    add_model_options(p)
    add_sampling_options(p)
    return p.parse_args(argv)


def read_line(interactive: bool) -> str | None:
    """The next line of input (None at its end); Ctrl-C at the prompt gives an empty line."""
    try:
        return input("> " if interactive else "")
    except EOFError:
        return None
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return ""


def run(args: argparse.Namespace) -> None:
    check_model_args(args)
    vlm = load_model(args)
    conv = vlm.conversation(**sampling_kwargs(args))
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"minivlm chat: {COMMANDS}; Ctrl-C stops an answer", file=sys.stderr)
    pending: list = []  # images for the next question
    while (line := read_line(interactive)) is not None:
        line = line.strip()
        command, _, rest = line.partition(" ")
        if not line:
            continue
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            conv.reset()
            pending = []
            print("(new conversation)", file=sys.stderr)
        elif command == "/image":
            try:
                pending += open_images([rest.strip()], args)
                print(f"(image {len(pending)} attached to the next question)", file=sys.stderr)
            except (ValueError, OSError) as e:
                print_error(e)
        elif line.startswith("/"):
            print(f"error: unknown command {command}; {COMMANDS}", file=sys.stderr)
        else:
            ask(conv, line, pending)
            pending = []


def ask(conv, question: str, images: list) -> None:
    """One question: the answer streamed to stdout; Ctrl-C or a refused question leaves the conversation usable."""
    try:
        conv.ask(question, images=images, on_text=lambda piece: print(piece, end="", flush=True))
        print(flush=True)
    except KeyboardInterrupt:
        print(" [stopped]", flush=True)
    except ValueError as e:  # too long for the model, a bad image: say so and go on
        print_error(e)


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
