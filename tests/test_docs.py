"""The repository stands alone: its docs link only to files it has, nothing cites notes
outside it, and the README stays a user's page."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True,
                         text=True)
    if out.returncode != 0:  # not a git checkout (an sdist): walk the folders instead
        found = []
        for folder, _, files in os.walk(REPO):
            if ".git" in folder or ".venv" in folder:
                continue
            found += [os.path.relpath(os.path.join(folder, f), REPO) for f in files]
        return [f for f in found if any(re.fullmatch(p.replace("*", ".*"), f) for p in patterns)]
    return out.stdout.split()


def test_markdown_links_point_at_files_in_the_repository():
    missing = []
    for doc in _tracked("*.md"):
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            if not os.path.exists(os.path.join(REPO, os.path.dirname(doc), target)):
                missing.append(f"{doc}: {target}")
    assert not missing, missing


def test_nothing_cites_files_outside_the_repository():
    """Code, configs and docs name no notes or data outside the clone (the CI script alone
    says where the CI machines keep the test datasets)."""
    cites = []
    for path in _tracked("*.py", "*.md", "*.yaml", "*.toml", "*.cfg", "*.txt"):
        if not os.path.exists(os.path.join(REPO, path)):
            continue  # deleted in the working tree
        text = open(os.path.join(REPO, path), encoding="utf-8", errors="replace").read()
        for pattern in (r"REFERENCE\.md", r"DESIGN\.md", r"\.\./shared"):
            if path != "tests/test_docs.py" and re.search(pattern, text):
                cites.append(f"{path}: {pattern}")
    assert not cites, cites


def test_readme_is_a_short_users_page():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert len(text.splitlines()) <= 250
    for pattern in (r"\bissue \d+", r"\bat commit [0-9a-f]{7}", r"this 2-core machine",
                    r"sessions? so far"):
        assert not re.search(pattern, text, re.I), pattern
