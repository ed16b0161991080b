"""Where a checkpoint comes from: a local folder, the shipped demo model, or the Hugging Face Hub.

    resolve_checkpoint("weights/jina-vlm")      # a folder: used as it is
    resolve_checkpoint("minivlm-tiny")          # the demo model inside the package (minivlm/tiny/minivlm-tiny)
    resolve_checkpoint("jinaai/jina-vlm")       # downloaded with huggingface_hub into the standard HF cache

Hub ids go through `huggingface_hub.snapshot_download` with no `local_dir`, so files land in the cache every
Hugging Face tool shares (HF_HOME / HF_HUB_CACHE, default ~/.cache/huggingface/hub), are downloaded once, and
HF_HUB_OFFLINE=1 uses the cached copy without asking the network. huggingface_hub is an optional dependency
(`pip install 'minivlm[hub]'`); it is imported only when a Hub id is asked for.

`python -m minivlm.hub jinaai/jina-vlm --link weights/jina-vlm` downloads every file the project uses (the
remote code too, which `bench --official` and notebook 05 run) and links the folder there (`make weights`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .tiny import DEMO_DIR

DEMO_NAME = "minivlm-tiny"
REAL_MODEL = "jinaai/jina-vlm"
# Everything minivlm and the official code read: configs, weights, tokenizer, chat template, remote code.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.py"]
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_checkpoint(name: str | Path, revision: str | None = None) -> Path:
    """The checkpoint folder `name` means: a local folder wins, then the demo model's name, then a Hub id."""
    path = Path(name)
    if path.is_dir():
        return path
    if str(name) == DEMO_NAME:
        return DEMO_DIR
    if not HUB_ID.match(str(name)) or path.exists():
        raise FileNotFoundError(f"{name}: no such checkpoint folder (nor a Hugging Face id like {REAL_MODEL}, "
                                f"nor {DEMO_NAME!r}, the demo model)")
    return download(str(name), revision)


def download(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of `repo_id` in the Hugging Face cache, downloaded first if it is not there."""
    how = f"`hf download {repo_id}{f' --revision {revision}' if revision else ''}` on a machine with internet"
    if repo_id == REAL_MODEL:
        how += " (or `make weights` in a minivlm checkout)"
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE
    except ImportError:
        raise FileNotFoundError(f"{repo_id} looks like a Hugging Face id, and downloading it needs huggingface_hub: "
                                "pip install 'minivlm[hub]' (or pass a checkpoint folder)") from None
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS)
    except Exception as error:  # offline, unknown repo, no access, no space: one line for the user either way
        at = f" at revision {revision}" if revision else ""
        if HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{repo_id}{at} is not in the Hugging Face cache ({HF_HUB_CACHE}) and "
                                    f"HF_HUB_OFFLINE is set; get it with {how}") from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FileNotFoundError(f"could not download {repo_id}{at} ({type(error).__name__}: {reason}); get it "
                                f"with {how}, or pass a checkpoint folder") from None
    return Path(folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minivlm.hub", description="Download a checkpoint into the Hugging "
                                "Face cache (every file minivlm and the official code use) and print its folder.")
    p.add_argument("repo_id", nargs="?", default=REAL_MODEL)
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--link", metavar="PATH", help="also make PATH a symbolic link to the downloaded folder")
    args = p.parse_args(argv)
    try:
        folder = download(args.repo_id, args.revision)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.link:
        link = Path(args.link)
        if link.is_symlink():
            link.unlink()
        if link.exists():
            print(f"error: {link} exists and is not a link; remove it or choose another --link", file=sys.stderr)
            return 2
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder.resolve(), target_is_directory=True)
        print(f"{link} -> {folder}", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
