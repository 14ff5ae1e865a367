import sys

from latentdistill.cli import main

sys.exit(main())
