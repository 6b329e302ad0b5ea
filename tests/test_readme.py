"""The README and the docs are part of the product: the config reference and the Quick start must be current."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _update_readme_module():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_in_the_docs_is_generated_from_the_models():
    module = _update_readme_module()
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert module.START in reference and module.END in reference
    assert module.render(reference) == reference, "run: python scripts/update_readme.py"


def test_a_stale_config_reference_is_caught():
    module = _update_readme_module()
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    stale = reference.replace("| `seed` | int |", "| `seed` | str |", 1)
    assert stale != reference
    assert module.render(stale) != stale


def test_the_readme_links_to_the_config_reference_instead_of_embedding_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "config-reference:start" not in readme
    assert "docs/configuration.md" in readme


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(commands) == 2
    assert "winnow run" in commands[0] and "pytest" in commands[1]
    assert commands[1].replace("python3.11", "$PY") in (ROOT / ".ci" / "run").read_text()
