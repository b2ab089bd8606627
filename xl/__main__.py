import sys

from xl.cli import main

sys.exit(main())
