"""Plugin discovery (entry points), binding to the YAML config, and compiled per-request dispatch.

pluggy does discovery, spec validation (``check_pending``: a misspelled hook fails loudly) and
ordering. Per-request hooks are then compiled into plain async callers, one table per bundle, so
no pluggy call happens per request and none per chunk (see ARCHITECTURE / docs/architecture.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from . import hookspecs
from .config import Config, ConfigError, schema_problems

ENTRY_POINT_GROUP = "hookway"


def discover() -> dict[str, Any]:
    """Installed plugins: name -> entry point."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _firstresult(fns: list[Callable]) -> Callable | None:
    if not fns:
        return None
    pairs = tuple((f, inspect.iscoroutinefunction(f)) for f in fns)
    if len(pairs) == 1:
        f, is_async = pairs[0]
        if is_async:
            return f

        async def call_one(*args):
            return f(*args)
        return call_one

    async def call(*args):
        for f, is_async in pairs:
            result = f(*args)
            if is_async:
                result = await result
            if result is not None:
                return result
        return None
    return call


def _all(fns: list[Callable]) -> Callable | None:
    if not fns:
        return None
    pairs = tuple((f, inspect.iscoroutinefunction(f)) for f in fns)
    if len(pairs) == 1 and pairs[0][1]:
        return pairs[0][0]     # one async implementation: no wrapper around it

    async def call(*args):
        for f, is_async in pairs:
            if is_async:
                await f(*args)
            else:
                f(*args)
    return call


def _chain(middlewares: list[Callable]) -> Callable[[Any, Callable], Any] | None:
    """Compose ``mw(ctx, call_next)`` functions, outermost first, into one ``run(ctx, inner)``."""
    if not middlewares:
        return None

    def run(ctx, inner):
        call = inner
        for mw in reversed(middlewares):
            call = (lambda m, nxt: (lambda c: m(c, nxt)))(mw, call)
        return call(ctx)
    return run


@dataclass(slots=True)
class HookTable:
    """The compiled per-request hooks of one bundle. ``None`` means no plugin implements it, so
    the call site skips it for free."""

    auth: Callable | None = None
    route: Callable | None = None
    cache_lookup: Callable | None = None
    cache_store: Callable | None = None
    transform_request: Callable | None = None
    stream_transform_factories: tuple = ()
    fallback: Callable | None = None
    middleware: Callable | None = None
    plugins: tuple = ()


@dataclass
class LoadedPlugins:
    pm: pluggy.PluginManager
    instances: dict[str, Any] = field(default_factory=dict)         # instance name -> object
    settings: dict[str, dict] = field(default_factory=dict)         # instance name -> settings
    global_names: list[str] = field(default_factory=list)
    bundles: dict[str, list[str]] = field(default_factory=dict)     # bundle -> instance names
    tables: dict[str | None, HookTable] = field(default_factory=dict)

    def impls(self, hook: str, names: list[str] | None = None) -> list[tuple[str, Callable]]:
        """Implementations of ``hook`` in call order (pluggy's: tryfirst first, then LIFO)."""
        allowed = set(self.global_names if names is None else names)
        hc = getattr(self.pm.hook, hook)
        out = []
        for impl in reversed(hc.get_hookimpls()):
            if impl.plugin_name in allowed:
                out.append((impl.plugin_name, impl.function))
        return out

    def call_startup(self, hook: str, names: list[str] | None = None, **kwargs) -> list:
        """Call a start-up hook on the given instances (default: the global ones); results."""
        results = []
        for _, fn in self.impls(hook, names):
            r = fn(**{k: v for k, v in kwargs.items() if k in inspect.signature(fn).parameters})
            if r is not None:
                results.append(r)
        return results

    @property
    def all_names(self) -> list[str]:
        return list(self.instances)


def _instantiate(obj: Any) -> Any:
    """A plugin entry point is a class (or factory) called with no arguments, or a module."""
    return obj if inspect.ismodule(obj) else obj()


def load(config: Config, gateway: Any, available: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None) -> LoadedPlugins:
    """Load the plugins the config enables (globally and per bundle), validate their settings,
    configure them and compile the per-request tables. Raises :class:`ConfigError` listing every
    problem. ``extra`` maps names to plugin classes not installed as packages (tests)."""
    available = dict(available if available is not None else discover())
    extra = extra or {}
    pm = pluggy.PluginManager("hookway")
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm=pm)
    problems: list[str] = []
    classes: dict[str, Any] = {}

    wanted = list(config.plugins)
    for bundle in config.bundles.values():
        wanted += [n for n in bundle if n not in wanted]
    for name in wanted:
        if name in extra:
            classes[name] = extra[name]
            continue
        ep = available.get(name)
        if ep is None:
            problems.append(f"plugins.{name}: plugin {name!r} is not installed "
                            f"(install the package hookway-{name}, e.g. pip install -e plugins/{name}); "
                            f"installed: {', '.join(sorted(available)) or 'none'}")
            continue
        try:
            classes[name] = ep.load()
        except Exception as exc:  # a broken plugin package must not be a traceback
            problems.append(f"plugins.{name}: cannot load {ep.value}: {type(exc).__name__}: {exc}")
    if problems:
        raise ConfigError(problems)

    def add(instance_name: str, plugin_name: str, settings: dict, bundle: str | None):
        obj = classes[plugin_name]
        if bundle is not None and inspect.ismodule(obj):
            problems.append(f"bundles.{bundle}.{plugin_name}: this plugin is a module and cannot be "
                            "enabled twice with different settings")
            return
        instance = _instantiate(obj)
        instance.hookway_name = plugin_name if not hasattr(instance, "hookway_name") else instance.hookway_name
        try:
            pm.register(instance, name=instance_name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            problems.append(f"plugins.{plugin_name}: {exc}")
            return
        loaded.instances[instance_name] = instance
        loaded.settings[instance_name] = settings

    for name, settings in config.plugins.items():
        add(name, name, settings, None)
        loaded.global_names.append(name)
    for bundle, block in config.bundles.items():
        names = []
        for name, settings in block.items():
            instance_name = f"{name}@{bundle}"
            add(instance_name, name, settings, bundle)
            names.append(instance_name)
        loaded.bundles[bundle] = names
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        problems.append(f"plugin {pm.get_name(exc.plugin)}: {exc}")
    if problems:
        raise ConfigError(problems)

    # Settings validation against each plugin's declared schema.
    for instance_name, fn in loaded.impls("hookway_config_schema", loaded.all_names):
        schema = fn()
        if schema:
            plugin_name, _, bundle = instance_name.partition("@")
            prefix = ["bundles", bundle, plugin_name] if bundle else ["plugins", plugin_name]
            problems += schema_problems(loaded.settings[instance_name], schema, prefix)
    if problems:
        raise ConfigError(problems)

    for instance_name, fn in loaded.impls("hookway_configure", loaded.all_names):
        try:
            fn(settings=loaded.settings[instance_name], gateway=gateway)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)

    loaded.tables[None] = compile_table(loaded, loaded.global_names)
    for bundle, names in loaded.bundles.items():
        loaded.tables[bundle] = compile_table(loaded, loaded.global_names + names)
    return loaded


def settings_problems(raw: dict, available: dict[str, Any] | None = None) -> list[str]:
    """Each installed plugin's settings in a raw config checked against its schema, without
    starting anything: lets ``hookway check`` report them beside the core's own problems."""
    available = dict(available if available is not None else discover())
    blocks = []
    if isinstance(raw.get("plugins"), dict):
        blocks += [(["plugins", n], n, v) for n, v in raw["plugins"].items()]
    if isinstance(raw.get("bundles"), dict):
        blocks += [(["bundles", b, n], n, v) for b, block in raw["bundles"].items()
                   if isinstance(block, dict) for n, v in block.items()]
    problems: list[str] = []
    for prefix, name, settings in blocks:
        if name not in available or not isinstance(settings, (dict, type(None))):
            continue   # reported by the core schema or as not installed
        try:
            schema_of = getattr(_instantiate(available[name].load()), "hookway_config_schema", None)
            schema = schema_of() if schema_of is not None else None
        except Exception:   # a broken plugin is reported when the gateway loads it
            continue
        if schema:
            problems += schema_problems(settings or {}, schema, prefix)
    return problems


def compile_table(loaded: LoadedPlugins, names: list[str]) -> HookTable:
    def fns(hook):
        return [fn for _, fn in loaded.impls(hook, names)]

    middlewares = [m for m in (fn() for fn in fns("hookway_middleware")) if m is not None]
    return HookTable(
        auth=_firstresult(fns("hookway_auth")),
        route=_firstresult(fns("hookway_route")),
        cache_lookup=_firstresult(fns("hookway_cache_lookup")),
        cache_store=_all(fns("hookway_cache_store")),
        transform_request=_all(fns("hookway_transform_request")),
        stream_transform_factories=tuple(fns("hookway_transform_stream")),
        fallback=_firstresult(fns("hookway_fallback")),
        middleware=_chain(middlewares),
        plugins=tuple(names),
    )


def compose_stream_transforms(transforms: list[Callable]) -> Callable | None:
    """One callable ``events = f(event)`` (a list) from the per-stream transforms, composed once."""
    if not transforms:
        return None

    def apply(event):
        events = [event]
        for t in transforms:
            out = []
            for ev in events:
                r = t(ev)
                if r is None:
                    continue
                if isinstance(r, list):
                    out.extend(r)
                else:
                    out.append(r)
            events = out
        return events
    return apply
