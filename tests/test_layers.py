"""The packages' import structure, read from the code by grimp (import-linter's graph), imports inside functions
included: what the contracts in pyproject.toml cannot say."""

import grimp

PACKAGES_WITHOUT_CYCLES = ("advisor", "runners", "bench")


def import_cycles(graph, package: str) -> list[list[str]]:
    """Each set of `package`'s modules that import one another (directly or through other modules), as one chain
    from its first module round to itself: the strongly connected components larger than one module. No package
    `__init__` here imports its own submodules, so none needs leaving out."""
    seen, cycles = set(), []
    for module in sorted(m for m in graph.modules if m.split(".")[0] == package):
        if module in seen:
            continue
        both_ways = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        members = {m for m in both_ways if m.split(".")[0] == package}
        if members:
            seen |= members | {module}
            other = min(members)
            cycles.append(graph.find_shortest_chain(module, other) + graph.find_shortest_chain(other, module)[1:])
    return cycles


def test_no_import_cycles():
    graph = grimp.build_graph("runners", "bench", "advisor", cache_dir=None)  # nothing written into the tree
    cycles = {package: import_cycles(graph, package) for package in PACKAGES_WITHOUT_CYCLES}
    found = [" -> ".join(chain) for chains in cycles.values() for chain in chains]
    assert not found, "modules that import each other (move what they share into one module both import): " + "; ".join(found)
