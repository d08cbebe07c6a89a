"""`make test` passes in a clone with no ../shared beside it: every test that reads ../shared skips, saying why.

Read from the test sources with ast: a module-level name built from a `"shared"` path is shared data; a test
reaching it (in its body, through a module function or a fixture it takes, transitively) must carry a skipif
that names it (on the test, through a mark variable, or in the module's `pytestmark`).
"""

import ast

from conftest import REPO


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _unchecked_names(function: ast.FunctionDef, shared: set[str]) -> set[str]:
    """Names `function` uses, less the shared ones it reads only under `if NAME.is_file()` (or is_dir, exists; a statement or an expression):
    such a function uses ../shared when it is there and runs without it."""
    checked = {call.func.value.id for node in ast.walk(function) if isinstance(node, (ast.If, ast.IfExp))
               for call in ast.walk(node.test)
               if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
               and call.func.attr in ("is_file", "is_dir", "exists") and isinstance(call.func.value, ast.Name)}
    return _names(function) - (checked & shared)


def unguarded_tests(source: str) -> list[str]:
    """The test functions of a module's `source` that reach ../shared data without a skipif naming it."""
    tree = ast.parse(source)
    shared: set[str] = set()
    marks: set[str] = set()
    guarded_module = False
    for node in tree.body:  # in order: a name built from another shared name is shared too
        if not isinstance(node, ast.Assign):
            continue
        targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
        text = ast.unparse(node.value)
        if '"shared"' in text or "'shared'" in text or _names(node.value) & shared:
            shared |= targets
        if "skipif" in text and _names(node.value) & (shared | marks):
            marks |= targets
        if "pytestmark" in targets and _names(node.value) & (shared | marks):
            guarded_module = True
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    uses = {name: _unchecked_names(f, shared) | {a.arg for a in f.args.args} for name, f in functions.items()}
    reaching = {name for name, used in uses.items() if used & shared}
    while True:  # through helpers and fixtures, transitively
        more = {name for name, used in uses.items() if used & reaching} - reaching
        if not more:
            break
        reaching |= more
    if guarded_module:
        return []
    return sorted(name for name in reaching if name.startswith("test_")
                  and not any(_names(d) & (shared | marks) and "skipif" in ast.unparse(d) or _names(d) & marks
                              for d in functions[name].decorator_list))


def test_every_test_reading_shared_data_skips_without_it():
    found = {path.name: unguarded_tests(path.read_text()) for path in sorted((REPO / "tests").glob("test_*.py"))}
    assert {name: tests for name, tests in found.items() if tests} == {}


def test_the_rule_sees_an_unguarded_fixture_and_accepts_a_guard():
    unguarded = '''
DATA = REPO.parent / "shared" / "data"
ROWS = DATA / "gsm8k"
@pytest.fixture
def rows():
    return (ROWS / "train.jsonl").read_text()
def test_reads(rows):
    assert rows
def test_other():
    assert 1
'''
    assert unguarded_tests(unguarded) == ["test_reads"]
    marked = unguarded.replace("def test_reads", "@needs\ndef test_reads").replace(
        "ROWS = DATA", "needs = pytest.mark.skipif(not DATA.is_dir(), reason='absent')\nROWS = DATA")
    assert unguarded_tests(marked) == []
    assert unguarded_tests(unguarded + "pytestmark = [pytest.mark.skipif(not ROWS.is_dir(), reason='x')]\n") == []
    optional = unguarded.replace("return (ROWS", "if ROWS.is_dir():\n        return (ROWS")
    assert unguarded_tests(optional) == []


def test_the_real_candidates_bench_takes_its_paths_as_arguments(tmp_path):
    """No default path beside the clone (../shared) and no default output over a tracked results file."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "bench" / "real_candidates.py"), str(tmp_path / "prm")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "the following arguments are required: --candidates, --out" in proc.stderr
