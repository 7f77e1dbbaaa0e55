"""`python -m resnet_rosetta.cli`: what torchrun starts for `train --distributed`."""

import sys

from resnet_rosetta.cli import main

sys.exit(main())
