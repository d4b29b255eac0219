"""Names across modules: what `charge` in `orders/views.py` refers to.

Module names are derived from file paths relative to the inventory's root, which need
not be the import root (a Django project under `src/`, a repository holding several
projects). So a qualified name is matched on whole trailing components: the import
`billing.tasks.charge` finds `src.billing.tasks.charge`.
"""

from __future__ import annotations

from collections import defaultdict

from graduate.migrate.inventory.reader import ModuleFacts

_MAX_HOPS = 6  # re-exports followed through package __init__ files


class Symbols:
    """Every module-level definition of the codebase, and how to resolve a name to one."""

    def __init__(self, modules: list[ModuleFacts], package: str | None = None) -> None:
        # The import name of the root read when it is a package itself (its __init__.py
        # read): `from superset import db` names the root's own module.
        self.package = package
        self.modules = {m.module: m for m in modules}
        self.defined: dict[str, ModuleFacts] = {}
        for facts in modules:
            names = ([f.name for f in facts.functions if "." not in f.qualname or f.nested_in]
                     + [c.name for c in facts.classes] + [a.name for a in facts.assignments])
            for name in names:
                self.defined[_join(facts.module, name)] = facts
        # A name matches on trailing components only past folders that are no package:
        # `src/billing/tasks.py` is `billing.tasks`, but `weblate/utils/requests.py`
        # (utils/__init__.py read) is not the `requests` library its code imports.
        packages = {m.module for m in modules if m.path.endswith("__init__.py")}
        self._suffixes: dict[str, list[str]] = defaultdict(list)
        for full in sorted(self.defined, key=lambda n: (n.count("."), n)):
            parts = full.split(".")
            for start in range(len(parts)):
                if not start or ".".join(parts[:start]) not in packages:
                    self._suffixes[".".join(parts[start:])].append(full)
        self._module_suffixes: dict[str, list[str]] = defaultdict(list)
        for module in sorted(self.modules, key=lambda n: (n.count("."), n)):
            parts = module.split(".")
            for start in range(len(parts)):
                if not start or ".".join(parts[:start]) not in packages:
                    self._module_suffixes[".".join(parts[start:])].append(module)

    def qualify(self, facts: ModuleFacts, ref: str) -> str:
        """The absolute dotted name `ref` stands for inside module `facts`."""
        head, _, rest = ref.partition(".")
        if _join(facts.module, head) in self.defined:
            return _join(facts.module, ref)
        if head in facts.imports:
            return f"{facts.imports[head]}.{rest}" if rest else facts.imports[head]
        return ref

    def _within(self, name: str) -> str:
        """`name` relative to the root read, when it names the root package's insides."""
        if self.package and "" in self.modules and (
                name == self.package or name.startswith(f"{self.package}.")):
            return name[len(self.package) + 1:]
        return name

    def find(self, qualified: str, hops: int = 0) -> str | None:
        """The project definition a qualified name refers to, following re-exports."""
        qualified = self._within(qualified)
        if qualified in self.defined:
            return qualified
        if candidates := self._suffixes.get(qualified):
            return candidates[0]
        parts = qualified.split(".")
        # The root read may lie inside the import root: `examples.app.clients.send` is
        # `clients.send` when the inventory reads examples/app/.
        for cut in range(1, len(parts) - 1):
            if (tail := ".".join(parts[cut:])) in self.defined:
                return tail
        if hops >= _MAX_HOPS:
            return None
        root = self.modules.get("")
        if len(parts) == 1 and root is not None and parts[0] in root.imports:
            return self.find(root.imports[parts[0]], hops + 1)  # re-exported by the root
        for cut in range(len(parts) - 1, 0, -1):
            module = self.module(".".join(parts[:cut]))
            if module is None:
                continue
            name, rest = parts[cut], parts[cut + 1:]
            if name in module.imports:
                return self.find(".".join([module.imports[name], *rest]), hops + 1)
            return None
        return None

    def module(self, dotted_name: str) -> ModuleFacts | None:
        """The module `dotted_name` names, matched on trailing components."""
        dotted_name = self._within(dotted_name)
        if dotted_name in self.modules:
            return self.modules[dotted_name]
        if candidates := self._module_suffixes.get(dotted_name):
            return self.modules[candidates[0]]
        parts = dotted_name.split(".")
        for cut in range(1, len(parts)):  # the root read may lie inside the import root
            if (tail := ".".join(parts[cut:])) in self.modules:
                return self.modules[tail]
        return None

    def is_project(self, qualified: str) -> bool:
        """Whether a qualified name lies in one of the project's own modules."""
        parts = qualified.split(".")
        return any(self.module(".".join(parts[:cut])) is not None
                   for cut in range(1, len(parts)))

    def resolve(self, facts: ModuleFacts, ref: str) -> str | None:
        """The project definition `ref` refers to inside module `facts`, if any.

        Only names the module defines or imports resolve: a local variable never
        matches a definition of the same name elsewhere."""
        head = ref.partition(".")[0]
        if _join(facts.module, head) not in self.defined and head not in facts.imports:
            return None
        return self.find(self.qualify(facts, ref))


    def bring_star_imports(self) -> list[tuple[ModuleFacts, str, int, str]]:
        """Bind the names each `from M import *` brings, when M is a module of the
        codebase: its `__all__` when that is a literal list or tuple, else its public
        top-level names (definitions, imports, and what its own star imports bring; found
        to a fixed point, since packages re-export through one another).

        Returns the star imports of the codebase's modules left unbound, with why: M
        computes its `__all__`. Star imports of modules outside the codebase bring no task
        of its own and are not returned."""
        changed = True
        passes = 0
        while changed and passes < _MAX_HOPS:
            changed, passes = False, passes + 1
            for facts in self.modules.values():
                # The last star import first: of two that bring one name, Python binds
                # the later one's.
                for source, _ in sorted(facts.star_imports, key=lambda star: -star[1]):
                    module = self.module(source) if source else None
                    if module is None or module is facts:
                        continue
                    for name, target in _exported(module).items():
                        if name not in facts.imports:
                            facts.imports[name] = target
                            changed = True
        unbound: list[tuple[ModuleFacts, str, int, str]] = []
        for facts in self.modules.values():
            for source, line in facts.star_imports:
                module = self.module(source) if source else None
                if module is not None and _computes_all(module):
                    unbound.append((facts, source, line,
                                    f"{module.module} computes its __all__"))
        return unbound


def _all_of(module: ModuleFacts) -> tuple[str, ...] | None:
    """A module's `__all__` when the code writes it as a literal list or tuple of names."""
    written = [a.value for a in module.assignments if a.name == "__all__"]
    if written and isinstance(written[-1], tuple) and all(
            isinstance(name, str) for name in written[-1]):
        return tuple(str(name) for name in written[-1])
    return None


def _computes_all(module: ModuleFacts) -> bool:
    """Whether a module has an `__all__` that is no literal list or tuple of names."""
    return _all_of(module) is None and any(a.name == "__all__" for a in module.assignments)


def _exported(module: ModuleFacts) -> dict[str, str]:
    """The names `from module import *` binds, each to the qualified name it stands for."""
    own = {name: _join(module.module, name) for name in (
        [f.name for f in module.functions if "." not in f.qualname or f.nested_in]
        + [c.name for c in module.classes] + [a.name for a in module.assignments])}
    every = {**module.imports, **own}
    listed = _all_of(module)
    if listed is not None:
        return {name: every.get(name, _join(module.module, name)) for name in listed}
    if _computes_all(module):
        return {}  # not known without running the code
    return {name: target for name, target in every.items() if not name.startswith("_")}


def _join(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name
