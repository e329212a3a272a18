"""One module per subcommand group; importing this package registers them all with `rlrun.cli.command`."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
