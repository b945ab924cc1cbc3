"""``python -m napari_flow_features.cli``: the ``flow-features`` command."""

from . import entry

if __name__ == "__main__":
    entry()
