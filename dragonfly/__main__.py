"""``python -m dragonfly``."""

from dragonfly._entry import main

main()
