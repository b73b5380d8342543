"""The pure modules and the CLI's start-up must not import the heavy runtime."""

import subprocess
import sys

HEAVY = ("vllm", "torch", "ray", "deepspeed", "transformers")


def test_pure_modules_do_not_import_runtime_libraries():
    # What the import contract cannot see: lazy imports at run time. Planning a recipe,
    # building its report's data model and parsing every command import nothing heavy.
    code = (
        "import sys\n"
        "import selfalign.core.config, selfalign.engine.rows, selfalign.core.models\n"
        "import selfalign.stages.curate.rows, selfalign.serving.rows, selfalign.serving.guard\n"
        "import selfalign.pipeline.runner, selfalign.pipeline.report, selfalign.cli\n"
        "from selfalign.recipes import RECIPES, get_recipe\n"
        "for name in RECIPES:\n"
        "    recipe = get_recipe(name)\n"
        "    recipe.plan(recipe.config_type())\n"
        "selfalign.cli.build_parser()  # imports every command module\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_cli_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "selfalign", "--help"], capture_output=True, text=True, check=True
    )
    assert "generate" in out.stdout


def test_cli_config_error_exits_2_with_a_message():
    out = subprocess.run(
        [sys.executable, "-m", "selfalign", "generate", "sampling.max_tokens=-1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "sampling.max_tokens" in out.stderr


def test_cli_overrides_are_accepted_after_options_and_junk_is_rejected():
    out = subprocess.run(
        [sys.executable, "-m", "selfalign", "generate", "--limit", "2", "sampling.max_tokens=0"],
        capture_output=True,
        text=True,
    )
    # Parsed as an override (then rejected by validation), not as an unknown argument.
    assert out.returncode == 2 and "sampling.max_tokens" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "selfalign", "generate", "--limit", "2", "--bogus"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr
