#!/usr/bin/env python3
"""No import loop between the files of a crate (CONVENTIONS.md): for every crate under
crates/, the graph of `use crate::...` / `super::...` references between its source files
(comments and `#[cfg(test)] mod tests` bodies left out) has no cycle. Prints each cycle and
exits 1 if there is one. Run by scripts/test beside fmt and clippy."""
import os, re, sys
def modfile(src, parts):
    # longest prefix of parts that is a module file
    for k in range(len(parts), 0, -1):
        p = os.path.join(src, *parts[:k])
        for c in (p + '.rs', os.path.join(p, 'mod.rs')):
            if os.path.exists(c): return c
    return None
def modparts(src, f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    if rel[-1] == 'mod': rel = rel[:-1]
    if rel in (['lib'], ['main']): rel = []
    return rel
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
cycles = 0
for crate in sorted(os.listdir('crates')):
    src = os.path.join('crates', crate, 'src')
    files = [os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith('.rs')]
    g = {}
    for f in files:
        text = open(f).read()
        text = re.sub(r'//[^\n]*', '', text)
        text = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', text, flags=re.S)
        me = modparts(src, f)
        edges = set()
        for m in re.finditer(r'\b(crate|super)((?:::\w+)+)', text):
            kind, path = m.group(1), [x for x in m.group(2).split('::') if x]
            if kind == 'crate': parts = path
            else:
                base = me[:-1] if not f.endswith('mod.rs') else me[:-1]
                # super from a.rs -> parent of a; from a/mod.rs -> parent of a
                parts = base + path
            t = modfile(src, parts)
            if t and t != f and not (os.path.basename(t) in ('lib.rs','main.rs')):
                edges.add(t)
        g[f] = edges
    # find cycles via DFS
    color = {}; stack = []; found = []
    def dfs(u):
        color[u] = 1; stack.append(u)
        for v in g.get(u, ()):
            if color.get(v) == 1:
                cyc = stack[stack.index(v):] + [v]
                # ignore parent<->child mod.rs edges
                found.append(cyc)
            elif color.get(v) is None: dfs(v)
        stack.pop(); color[u] = 2
    for f in files:
        if color.get(f) is None: dfs(f)
    for c in found:
        print(crate, ' -> '.join(os.path.relpath(x, src) for x in c))
        cycles += 1
if cycles:
    print(f"{cycles} import loop(s) between files of a crate", file=sys.stderr)
    sys.exit(1)
print("no import loop between the files of any crate")
