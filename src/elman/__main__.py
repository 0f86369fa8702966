import sys

from elman.cli import main

sys.exit(main())
