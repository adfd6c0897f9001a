#!/usr/bin/env python3
"""Build the discovery kernel and initrd offline from Debian packages, from a checkout.

The same as `dragonfly discovery build` (see dragonfly/boot/discovery_image.py for what it does).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dragonfly.boot.discovery_image import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
