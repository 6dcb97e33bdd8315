"""The package as it was at an earlier commit, for benchmarks that time before against now.

    commit = extract_package("a3fae5a", folder)   # folder/tf_lottery, put folder on PYTHONPATH
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def extract_package(ref: str, folder: Path) -> str:
    """``git archive REF tf_lottery`` unpacked into ``folder``; returns the full commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit, "tf_lottery"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait():
        raise SystemExit(f"git archive {commit} tf_lottery failed")
    return commit
