"""aad's modules import each other without cycles (function-level imports
included), so each can be read, tested and replaced on its own."""

import ast
import pathlib

AAD = pathlib.Path(__file__).resolve().parents[1] / 'aad'


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = path.relative_to(root.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def import_graph(root: pathlib.Path = AAD) -> dict[str, set[str]]:
  """{module: aad modules it imports anywhere in its body}.

  `from P import n` is an edge to P.n when that is a module of the package,
  else to P itself.
  """
  files = {_module_name(p, root): p for p in root.rglob('*.py')}
  graph = {}
  for name, path in files.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        edges |= {a.name for a in node.names if a.name in files}
      elif isinstance(node, ast.ImportFrom) and node.module and (
          node.module in files) and not node.level:
        for alias in node.names:
          sub = f'{node.module}.{alias.name}'
          edges.add(sub if sub in files else node.module)
    edges.discard(name)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a list of modules, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_checker_finds_a_planted_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == [
      'a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_the_graph_sees_function_level_and_submodule_imports(tmp_path):
  pkg = tmp_path / 'aad'
  (pkg / 'sub').mkdir(parents=True)
  (pkg / '__init__.py').write_text('')
  (pkg / 'sub' / '__init__.py').write_text('from aad.sub import leaf\n')
  (pkg / 'sub' / 'leaf.py').write_text('def f():\n  from aad import top\n')
  (pkg / 'top.py').write_text('import aad.sub\nfrom aad.sub import leaf\n')
  graph = import_graph(pkg)
  assert graph['aad.sub'] == {'aad.sub.leaf'}
  assert graph['aad.sub.leaf'] == {'aad.top'}
  assert graph['aad.top'] == {'aad.sub', 'aad.sub.leaf'}
  assert find_cycle(graph) == ['aad.sub', 'aad.sub.leaf', 'aad.top',
                               'aad.sub']


def test_aad_has_no_import_cycle():
  graph = import_graph()
  assert {'aad.training.loop', 'aad.experiment.testing', 'aad.experiment.run',
          'aad.models'} <= set(
      graph)
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_training_knows_nothing_of_evaluation():
  graph = import_graph()
  assert not graph['aad.training.loop'] & {
      'aad.experiment.testing', 'aad.metrics.protocol', 'aad.scoring',
      'aad.report', 'aad.experiment.run'}
