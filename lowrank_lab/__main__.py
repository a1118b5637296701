import sys

from lowrank_lab.allocator import release_large_blocks
from lowrank_lab.cli import main

release_large_blocks()  # this process's large tensors go back to the system when freed
sys.exit(main())
