"""The documentation: every config key documented by its option class, the reference current, MkDocs strict."""

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import mpimager
from mpimager.config import reference


@pytest.mark.pure
def test_every_config_key_has_its_documentation():
    from mpimager.config.load import _SCHEMA

    missing = [f"[{table}] {key}" for table, cls in reference.sections().items()
               for key, doc in reference.field_docs(cls).items() if not doc]
    assert missing == [], "option fields without a docstring under them: " + ", ".join(missing)
    for table, keys in _SCHEMA.items():  # the keys a config may set are the fields the reference shows
        assert set(keys) == {f.name for f in dataclasses.fields(reference.sections()[table])}, table


def test_the_committed_reference_is_the_generated_one():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference.markdown(), "run: python -m mpimager.config.reference docs/configuration.md"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed ([docs] extra)")
def test_the_docs_build_with_warnings_as_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


@pytest.mark.pure
def test_every_public_function_documents_its_parameters():
    spec = importlib.util.spec_from_file_location("check_docstrings", ROOT / "scripts" / "check_docstrings.py")
    assert spec is not None and spec.loader is not None
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    found = checker.problems(Path(mpimager.__file__).parent)  # the package imported: the installed one in CI
    assert found == [], f"{len(found)} public functions whose docstring misses a parameter:\n" + "\n".join(found)
