"""The package's shape, checked: imports follow the pipeline order, modules and functions stay small."""

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "latentdistill"
# data -> autoencoders -> priors -> distill -> export -> evaluate -> tasks -> workflows -> cli, over a
# foundation every layer may use. A module may import its own layer and the layers below it.
LAYERS = {
    "errors": 0, "registry": 0, "io": 0, "config": 0, "runtime": 0, "training_state": 0, "run_folder": 0, "trackers": 0,
    "nets": 1, "data": 1, "autoencoders": 2, "priors": 3, "distill": 4, "export": 5, "storage": 5, "evaluate": 6, "tasks": 7,
    "workflows": 8, "launch": 8, "reports": 7, "cli": 9, "__main__": 9, "__init__": 9, "pretrained": 2,
}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return LAYERS[top]


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append(f"{base}.{node.module}" if node.module else base)
            elif node.module and node.module.startswith("latentdistill"):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("latentdistill")]
    return [name for name in found if name != "latentdistill"]


def test_imports_follow_the_pipeline_order():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module.endswith(".__init__") and module.count(".") > 1:
            module = module[: -len(".__init__")]
        for name in imported_modules(path):
            if layer_of(name) > layer_of(module):
                wrong.append(f"{module} imports {name}")
    assert not wrong, wrong


def test_modules_and_functions_stay_small():
    """About 300 lines a module; a function over 60 lines says why in its docstring ("Long on purpose")."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 320:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                if "Long on purpose" not in (ast.get_docstring(node) or ""):
                    too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
    assert len((PACKAGE / "workflows" / "__init__.py").read_text().splitlines()) < 250
