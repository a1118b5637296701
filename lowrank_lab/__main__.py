import sys

from lowrank_lab.cli import main

sys.exit(main())
